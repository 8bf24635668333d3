"""One module per manager command; each module's docstring is its wire documentation.

Every command takes a params map and returns a msgpack-able value or raises a shimproto.errors class. A call that
changes something may carry `key` (a string the client chose, [A-Za-z0-9_.-], at most 64 characters): a client
that lost its manager mid-call sends the same call with the same key again, and gets the first call's outcome
instead of a second effect. Handlers read it with `params.request_key(p)`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from shimproto.wire import Params

from ..registry import Registry
from . import (
    commit,
    create,
    delete,
    events,
    exec,
    export,
    export_read,
    image_import,
    image_inspect,
    image_prune,
    image_remove,
    image_save,
    image_tag,
    images,
    info,
    inspect,
    kill,
    list,
    logs,
    network,
    ping,
    proxy,
    pull,
    push,
    restart,
    start,
    stop,
    transfers,
    update,
    version,
    volume,
    wait,
)
from .params import request_key

MODULES = (create, start, restart, list, inspect, kill, wait, logs, delete, ping, exec, events, stop, version, info,
           pull, push, images, image_inspect, image_import, image_remove, image_prune, image_tag, image_save,
           export, export_read, commit, transfers, update)
GROUPS = (network, volume)  # several commands each: HANDLERS maps their names to handlers


def handlers(m: Registry) -> dict[str, Callable[[Params], Awaitable[object]]]:
    inflight: dict[str, asyncio.Future] = {}

    def once(fn: Callable[[Registry, Params], Awaitable[object]]) -> Callable[[Params], Awaitable[object]]:
        """A repeat of a keyed call that is still running here waits for the first one's outcome."""
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

    table = {mod.NAME: once(mod.handle) for mod in MODULES}
    for group in GROUPS:
        table |= {name: once(fn) for name, fn in group.HANDLERS.items()}
    for name in proxy.ROUTES:
        table[name] = once(proxy.handler(name))
    return table
