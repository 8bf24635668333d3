"""Named volumes (manager/volumes.py): <root>/volumes/NAME/_data, kept until removed.

- volume_create {name} -> volume {name, created_at, mountpoint}. Errors: invalid_argument, already_exists.
- volume_list {} -> [volume, ...], each with `containers` (the ids using it).
- volume_inspect {name} -> volume. Errors: not_found.
- volume_remove {name}: refused while a container (of any status) uses it (invalid_state); its data goes.
"""

from __future__ import annotations

from shimproto.model import rfc3339

from .. import attach
from ..registry import Registry
from .named import handlers


def _view(m: Registry, v: dict) -> dict:
    return {**v, "created_at": rfc3339(int(v.get("created_at", 0))),
            "containers": attach.volume_users(m, str(v.get("name", "")))}


HANDLERS = handlers("volume", lambda m: m.volumes, _view, attach.volume_users)
