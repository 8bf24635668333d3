"""One module per manager command; each module's docstring is its wire documentation.

Every command takes a params map and returns a msgpack-able value or raises a shimproto.errors class. A call that
changes something may carry `key` (a string the client chose, [A-Za-z0-9_.-], at most 64 characters): a client
that lost its manager mid-call sends the same call with the same key again, and gets the first call's outcome
instead of a second effect. Handlers read it with `params.request_key(p)`.
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Awaitable, Callable

from shimproto.wire import Params

from ..registry import Registry
from . import proxy
from .named import VERBS
from .params import request_key

# one command each, named as its module (its NAME); imported at the command's first call (Handlers)
MODULES = ("create", "start", "restart", "list", "inspect", "kill", "wait", "logs", "delete", "ping", "exec",
           "events", "stop", "version", "info", "pull", "push", "images", "image_inspect", "image_import",
           "image_remove", "image_prune", "image_tag", "image_save", "export", "export_read", "commit", "transfers",
           "update")
GROUPS = ("network", "volume")  # the commands of named.VERBS each: KIND_VERB, their module's HANDLERS
INDEX = {**{name: name for name in MODULES}, **{f"{kind}_{verb}": kind for kind in GROUPS for verb in VERBS}}

Handler = Callable[[Params], Awaitable[object]]


def methods() -> set[str]:
    """Every method the manager serves (the table's names, none of the modules imported)."""
    return set(INDEX) | set(proxy.ROUTES)


class Handlers:
    """method -> handler, for the API server (`get`). A command's module is imported at its first call, or by
    `load_all` once the manager serves: a starting manager imports only what restore needs, and its clients, who
    wait on that restore, do not wait on the image, export and commit code too (about 15 % of its imports)."""

    def __init__(self, m: Registry) -> None:
        self.m = m
        self.inflight: dict[str, asyncio.Future] = {}
        self.table: dict[str, Handler] = {name: self.once(proxy.handler(name)) for name in proxy.ROUTES}

    def get(self, method: str) -> Handler | None:
        if method not in self.table and method in INDEX:
            self.load(INDEX[method])
        return self.table.get(method)

    def load(self, module: str) -> None:
        mod = importlib.import_module(f"{__name__}.{module}")
        for name, fn in (mod.HANDLERS if module in GROUPS else {mod.NAME: mod.handle}).items():
            self.table.setdefault(name, self.once(fn))

    async def load_all(self) -> None:
        """Import every command's module, one per turn of the loop, so that no call waits on them all."""
        for module in dict.fromkeys(INDEX.values()):
            self.load(module)
            await asyncio.sleep(0)

    def once(self, fn: Callable[[Registry, Params], Awaitable[object]]) -> Handler:
        """A repeat of a keyed call that is still running here waits for the first one's outcome."""
        m, inflight = self.m, self.inflight

        async def h(p: Params) -> object:
            key = request_key(p)
            if not key:
                return await fn(m, p)
            first = inflight.get(key)
            if first is None:
                first = inflight[key] = asyncio.ensure_future(fn(m, p))
                first.add_done_callback(lambda _: inflight.pop(key, None))
            return await asyncio.shield(first)
        return h
