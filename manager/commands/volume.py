"""Named volumes (manager/volumes.py): <root>/volumes/NAME/_data, kept until removed.

- volume_create {name} -> volume {name, created_at, mountpoint}. Errors: invalid_argument, already_exists.
- volume_list {} -> [volume, ...], each with `containers` (the ids using it).
- volume_inspect {name} -> volume. Errors: not_found.
- volume_remove {name}: refused while a container (of any status) uses it (invalid_state); its data goes.
"""

from __future__ import annotations

from shimproto.model import rfc3339
from shimproto.wire import Params

from .. import attach
from ..registry import Registry


def _view(m: Registry, v: dict) -> dict:
    return {**v, "created_at": rfc3339(int(v.get("created_at", 0))),
            "containers": attach.volume_users(m, str(v.get("name", "")))}


async def create(m: Registry, p: Params) -> dict:
    return _view(m, m.volumes.create(p.str("name", required=True)))


async def list_(m: Registry, p: Params) -> list:
    return [_view(m, v) for v in m.volumes.list()]


async def inspect(m: Registry, p: Params) -> dict:
    return _view(m, m.volumes.inspect(p.str("name", required=True)))


async def remove(m: Registry, p: Params) -> None:
    name = p.str("name", required=True)
    m.volumes.remove(name, attach.volume_users(m, name))


HANDLERS = {"volume_create": create, "volume_list": list_, "volume_inspect": inspect, "volume_remove": remove}
