"""The four commands of a kind of named object the manager keeps (networks, volumes): KIND_create {name, ...},
KIND_list, KIND_inspect {name}, KIND_remove {name} (refused while a container uses it). Each kind's module
documents its wire form; this only builds the handlers."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from shimproto.wire import Params

from ..registry import Registry

Handler = Callable[[Registry, Params], Awaitable[object]]
VERBS = ("create", "list", "inspect", "remove")  # KIND_VERB: the commands of each kind


def handlers(kind: str, store: Callable[[Registry], Any], view: Callable[[Registry, Any], dict],
             users: Callable[[Registry, str], list[str]], create_params: tuple[str, ...] = ()) -> dict[str, Handler]:
    async def create(m: Registry, p: Params) -> dict:
        return view(m, store(m).create(p.str("name", required=True), *(p.str(k, "") for k in create_params)))

    async def list_(m: Registry, p: Params) -> list:
        return [view(m, x) for x in store(m).list()]

    async def inspect(m: Registry, p: Params) -> dict:
        return view(m, store(m).inspect(p.str("name", required=True)))

    async def remove(m: Registry, p: Params) -> None:
        name = p.str("name", required=True)
        store(m).remove(name, users(m, name))

    return dict(zip((f"{kind}_{verb}" for verb in VERBS), (create, list_, inspect, remove), strict=True))
