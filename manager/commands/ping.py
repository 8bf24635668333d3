"""ping {} -> {"pid": int, "containers": int, "protocol": int, "template": int}: liveness of the manager.

protocol is shimproto.version.PROTOCOL (what this manager speaks with shims and clients); template is the pid of
the warm template that shims are forked from (0 when none is serving: disabled, starting or restarting)."""

import os

from shimproto.version import PROTOCOL
from shimproto.wire import Params

from .. import launcher

NAME = "ping"


async def handle(m, p: Params) -> dict:  # type: ignore[no-untyped-def]
    t = launcher.template
    return {"pid": os.getpid(), "containers": len(m.entries), "protocol": PROTOCOL,
            "template": t.pid if t is not None else 0}
