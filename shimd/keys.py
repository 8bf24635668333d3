"""Repeated calls recognised: a mutating request may carry `key` (at most 64 characters, chosen by the caller), and a
second request with the same key gets the first one's outcome (its result or its typed error) instead of running
again; one that arrives while the first is still running awaits it. A caller that lost an answer (its manager
was killed mid-call) can so ask again without doing anything twice.

The table is bounded: the last MAX_KEYS keys are kept, oldest forgotten first.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable, Callable

from shimproto.errors import InvalidArgument
from shimproto.wire import Params

MAX_KEYS = 1024
MAX_KEY_LEN = 64

Handler = Callable[[Params], Awaitable[object]]
Repeat = Callable[[str, Params, object], object]


class KeyedCalls:
    def __init__(self, size: int = MAX_KEYS) -> None:
        self.size = size
        self._calls: OrderedDict[str, tuple[str, asyncio.Future]] = OrderedDict()

    def wrap(self, method: str, handler: Handler, repeat: Repeat) -> Handler:
        """handler with keys: repeat(method, params, first result) makes a repeat's answer from the first's."""

        async def keyed(p: Params) -> object:
            key = p.str("key", "")
            if not key:
                return await handler(p)
            if len(key) > MAX_KEY_LEN:
                raise InvalidArgument(f"{method}: key of {len(key)} characters is longer than {MAX_KEY_LEN}")
            seen = self._calls.get(key)
            if seen is not None:
                first, fut = seen
                if first != method:
                    raise InvalidArgument(f"{method}: key {key!r} was already used for a {first} call")
                return repeat(method, p, await asyncio.shield(fut))  # the first call's error is raised here
            fut = asyncio.get_running_loop().create_future()
            self._calls[key] = (method, fut)
            while len(self._calls) > self.size:
                self._calls.popitem(last=False)
            try:
                result = await handler(p)
            except asyncio.CancelledError:  # the shim is going away: there is no outcome to give
                self._calls.pop(key, None)
                fut.cancel()
                raise
            except BaseException as e:
                fut.set_exception(e)
                fut.exception()  # retrieved: a key nobody repeats must not be logged as an unhandled error
                raise
            fut.set_result(result)
            return result

        return keyed
