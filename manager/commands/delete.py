"""delete {id, force?, exec_id?, key?} -> {exit}: remove a container (with exec_id: one of its stopped exec
processes).

A running container is refused unless force, which kills it first (SIGKILL) and waits for its exit. The manager
writes a delete intent, the shim deletes the runtime's container, unmounts the writable root and exits, then the
manager records the delete event and removes the log, the writable layer and the metadata (last). A manager killed
midway finishes the delete on its next start; a repeat of the call (same key) gets the first call's exit. Errors:
not_found, invalid_state.
"""

from __future__ import annotations

from shimproto.errors import NotFound
from shimproto.wire import Params

from .. import lifecycle
from ..registry import Registry
from .params import request_key

NAME = "delete"


async def handle(m: Registry, p: Params) -> dict:
    id = p.str("id", required=True)
    key = request_key(p)
    try:
        e = m.get(id)
    except NotFound:
        return lifecycle.deleted_before(m, id, key)
    exec_id = p.str("exec_id", "")
    if exec_id:  # only that exec process's record and output
        return await m.call(e, "delete", {"exec_id": exec_id}, key=lifecycle.step(key, "delete"))  # type: ignore
    return {"exit": await lifecycle.remove(m, e, p.bool("force"), key)}
