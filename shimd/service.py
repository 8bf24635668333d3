"""The shim API: decode params -> container operation -> encode result.

This is the one place where the shim's errors meet wire codes: runtime errors are translated by the table below;
everything else that is not a ShimdError becomes INTERNAL in the dispatcher (shimproto.rpc.Server).
"""

from __future__ import annotations

import asyncio

import runtime.errors as rt
from shimproto import errors as wire
from shimproto.model import parse_signal
from shimproto.wire import MAX_MESSAGE, Params

from .container import Container, CreateRequest

LONG_POLL_MAX = 60.0

_RUNTIME_TO_WIRE: dict[type[rt.RuntimeError_], type[wire.ShimdError]] = {
    rt.NotFound: wire.NotFound,
    rt.AlreadyExists: wire.AlreadyExists,
    rt.NotRunning: wire.InvalidState,
    rt.RuntimeError_: wire.RuntimeFailed,
}


def translate(exc: Exception) -> wire.ShimdError | None:
    for cls in type(exc).__mro__:
        if cls in _RUNTIME_TO_WIRE:
            return _RUNTIME_TO_WIRE[cls](str(exc))
    if isinstance(exc, OSError):
        return wire.Internal(f"{exc}")
    return None


class ShimService:
    def __init__(self, container: Container) -> None:
        self.c = container
        self.stop = asyncio.Event()

    def handlers(self) -> dict:
        return {
            "create": self.create,
            "start": self.start,
            "state": self.state,
            "kill": self.kill,
            "wait": self.wait,
            "logs": self.logs,
            "delete": self.delete,
            "shutdown": self.shutdown,
            "ping": self.ping,
        }

    async def ping(self, p: Params) -> dict:
        return {"id": self.c.id}

    async def create(self, p: Params) -> dict:
        req = CreateRequest(
            lower=p.str("lower", required=True), upper=p.str("upper", required=True),
            work=p.str("work", required=True), log_path=p.str("log_path", required=True),
            args=p.strlist("args", required=True), env=p.strlist("env"), cwd=p.str("cwd", "/"),
            hostname=p.str("hostname", ""), cgroups_path=p.str("cgroups_path", ""),
            memory_limit=p.int("memory_limit"), pids_limit=p.int("pids_limit"),
        )
        await self.c.create(req)
        return self.c.describe()

    async def start(self, p: Params) -> dict:
        await self.c.start()
        return self.c.describe()

    async def state(self, p: Params) -> dict:
        return self.c.describe()

    async def kill(self, p: Params) -> None:
        raw = p.raw.get("signal", 15)
        await self.c.kill(parse_signal(raw), p.bool("all"))

    async def wait(self, p: Params) -> dict:
        return await self.c.wait(min(p.float("timeout", 30.0), LONG_POLL_MAX))

    async def logs(self, p: Params) -> dict:
        cursor = p.int("cursor", 0)
        if cursor < 0:
            raise wire.InvalidArgument("logs: cursor must be >= 0")
        max_bytes = max(4096, min(p.int("max_bytes", 1 << 20), MAX_MESSAGE // 2))
        return await self.c.logs(cursor, p.bool("follow"), min(p.float("timeout", 30.0), LONG_POLL_MAX),
                                 max_bytes)

    async def delete(self, p: Params) -> dict:
        exit = await self.c.delete()
        self.stop.set()  # nothing left to own: the shim exits once this reply is out
        return {"exit": exit.to_wire() if exit else None}

    async def shutdown(self, p: Params) -> None:
        """Exit the shim. Refused while it still owns a container, unless force (the container is then killed)."""
        st = self.c.state
        if st is not None and st.name != "deleted":
            if not p.bool("force"):
                raise wire.InvalidState(f"cannot shut down the shim of {st.name} container {self.c.id}; delete it")
            await self.c.delete()
        self.stop.set()
