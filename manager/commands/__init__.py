"""One module per manager command; each module's docstring is its wire documentation.

Every command takes a params map and returns a msgpack-able value or raises a shimproto.errors class.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from shimproto.wire import Params

from ..registry import Manager
from . import create, delete, events, exec, inspect, kill, list, logs, ping, proxy, start, stop, wait

MODULES = (create, start, list, inspect, kill, wait, logs, delete, ping, exec, events, stop)


def handlers(m: Manager) -> dict[str, Callable[[Params], Awaitable[object]]]:
    def bind(mod):  # type: ignore[no-untyped-def]
        async def h(p: Params) -> object:
            return await mod.handle(m, p)
        return h

    table = {mod.NAME: bind(mod) for mod in MODULES}
    for name in proxy.ROUTES:
        fn = proxy.handler(name)
        table[name] = (lambda f: (lambda p: f(m, p)))(fn)
    return table
