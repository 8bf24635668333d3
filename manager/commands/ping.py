"""ping {} -> {"pid": int, "containers": int}: liveness of the manager."""

import os

from shimproto.wire import Params

NAME = "ping"


async def handle(m, p: Params) -> dict:  # type: ignore[no-untyped-def]
    return {"pid": os.getpid(), "containers": len(m.entries)}
