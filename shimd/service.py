"""The shim API: decode params -> container operation -> encode result.

This is the one place where the shim's errors meet wire codes: runtime errors are translated by the table below;
everything else that is not a ShimdError becomes INTERNAL in the dispatcher (shimproto.rpc.Server). Methods that
act on a process take an optional exec_id ("" or absent: the init). Mutating methods take an optional `key`
(KeyedCalls): a repeated call is answered with the first call's outcome instead of running again.
"""

from __future__ import annotations

import asyncio
import errno
import os

import runtime.errors as rt
from shimproto import errors as wire
from shimproto.cri import ReadOpts
from shimproto.model import parse_signal
from shimproto.plant import planted
from shimproto.policy import RestartPolicy
from shimproto.spec import ShimCreate
from shimproto.version import PROTOCOL
from shimproto.wire import MAX_MESSAGE, Params

from .container import Container
from .keys import KeyedCalls

LONG_POLL_MAX = 60.0

_RUNTIME_TO_WIRE: dict[type[rt.RuntimeError_], type[wire.ShimdError]] = {
    rt.NotFound: wire.NotFound,
    rt.AlreadyExists: wire.AlreadyExists,
    rt.NotRunning: wire.InvalidState,
    rt.CommandNotFound: wire.CommandNotFound,
    rt.CannotInvoke: wire.CannotInvoke,
    rt.RuntimeError_: wire.RuntimeFailed,
}

MUTATING = ("create", "start", "kill", "exec", "write_stdin", "close_stdin", "resize", "pause", "resume", "update",
            "delete", "shutdown", "restart", "hosts")
QUERIES = ("state", "pids", "stats", "wait", "logs", "events", "reopen_log", "ping")


def translate(exc: Exception) -> wire.ShimdError | None:
    for cls in type(exc).__mro__:
        if cls in _RUNTIME_TO_WIRE:
            return _RUNTIME_TO_WIRE[cls](str(exc))
    if isinstance(exc, OSError) and exc.errno in (errno.EPIPE, errno.ENOTTY):
        return wire.InvalidState(exc.strerror or str(exc))
    if isinstance(exc, TimeoutError):
        return wire.DeadlineExceeded(str(exc) or "timed out")
    return None


def _timeout(p: Params) -> float:
    return min(max(p.float("timeout", 30.0), 0.0), LONG_POLL_MAX)


class ShimService:
    def __init__(self, container: Container) -> None:
        self.c = container
        self.stop = asyncio.Event()
        self.keyed = KeyedCalls()

    def handlers(self) -> dict:
        out = {name: getattr(self, name) for name in QUERIES}
        out |= {name: self.keyed.wrap(name, getattr(self, name), self._repeat) for name in MUTATING}
        return out

    def _repeat(self, method: str, p: Params, result: object) -> object:
        """A repeat's answer from the first call's result: an exec is described as it is now (so the caller can
        go on to read its output and wait for its exit)."""
        if method == "exec" and isinstance(result, dict):
            p2 = self.c.execs.get(str(result.get("exec_id", "")))
            return p2.describe() if p2 is not None else result
        return result

    async def ping(self, p: Params) -> dict:
        return {"id": self.c.id, "protocol": PROTOCOL, "pid": os.getpid()}

    async def create(self, p: Params) -> dict:
        await self.c.create(ShimCreate.from_wire(p.raw))
        return self.c.describe()

    async def start(self, p: Params) -> dict:
        await self.c.start()
        return self.c.describe()

    async def restart(self, p: Params) -> dict:
        """A new run of a stopped container (InvalidState otherwise); started too when start is true."""
        await self.c.restart(p.bool("start"))
        return self.c.describe()

    async def state(self, p: Params) -> dict:
        if planted("leak-shim-fd"):
            os.open("/dev/null", os.O_RDONLY)
        return self.c.describe()

    async def pids(self, p: Params) -> list:
        return await self.c.pids()

    async def kill(self, p: Params) -> None:
        await self.c.kill(parse_signal(p.raw.get("signal", 15)), p.bool("all"), p.str("exec_id", ""))

    async def exec(self, p: Params) -> dict:
        proc = await self.c.exec(
            p.str("exec_id", required=True), p.strlist("args", required=True), p.strlist("env"),
            p.str("cwd", ""), p.bool("terminal"), p.bool("stdin"), p.bool("attach"), p.str("user", ""))
        return proc.describe()

    async def write_stdin(self, p: Params) -> None:
        await self.c.write_stdin(p.str("exec_id", ""), p.bytes("data", required=True))

    async def close_stdin(self, p: Params) -> None:
        self.c.close_stdin(p.str("exec_id", ""))

    async def resize(self, p: Params) -> None:
        rows, cols = p.int("rows", required=True), p.int("cols", required=True)
        if not (0 < rows < 65536 and 0 < cols < 65536):
            raise wire.InvalidArgument(f"resize: {rows}x{cols} is not a terminal size")
        self.c.resize(p.str("exec_id", ""), rows, cols)

    async def pause(self, p: Params) -> None:
        await self.c.pause()

    async def resume(self, p: Params) -> None:
        await self.c.resume()

    async def update(self, p: Params) -> None:
        """memory_limit, pids_limit (of a running container), restart (a policy's text; in any state)."""
        memory, pids, restart = p.int("memory_limit"), p.int("pids_limit"), p.str("restart")
        policy = RestartPolicy.parse(restart) if restart is not None else None
        if memory is None and pids is None and policy is None:
            raise wire.InvalidArgument("update: give a memory limit, a pids limit or a restart policy")
        if memory is not None and memory < 4 * 1024 * 1024:
            raise wire.InvalidArgument(f"update: memory limit {memory} is below the minimum of 4 MiB")
        if pids is not None and pids < 1:
            raise wire.InvalidArgument(f"update: pids limit {pids} must be at least 1")
        if memory is not None or pids is not None:
            await self.c.update(memory, pids)
        if policy is not None:
            self.c.restarts.policy = policy

    async def stats(self, p: Params) -> dict:
        return await self.c.stats()

    async def wait(self, p: Params) -> dict:
        """run (a run number from state, 0: none): that run's exit once it is over, though a restart followed."""
        if exec_id := p.str("exec_id", ""):
            return await self.c.process(exec_id).wait(_timeout(p))
        return await self.c.restarts.wait(self.c.process, p.int("run", 0), _timeout(p))

    async def logs(self, p: Params) -> dict:
        """Records from cursor; tail >= 0 starts at the last `tail` lines instead; since/until (unix ns, 0:
        unbounded, inclusive) filter by each record's time; timestamps adds it to each record."""
        max_bytes = max(4096, min(p.int("max_bytes", 1 << 20), MAX_MESSAGE // 2))
        since, until = p.int("since", 0), p.int("until", 0)
        if since < 0 or until < 0:
            raise wire.InvalidArgument("logs: since and until must be unix nanoseconds (0: unbounded)")
        opts = ReadOpts(since=since, until=until, timestamps=p.bool("timestamps"))
        exec_id = p.str("exec_id", "")
        res = await self.c.logs(exec_id, p.int("cursor", 0), p.bool("follow"), _timeout(p), max_bytes,
                                p.int("tail", -1), opts)
        try:
            log = self.c.process(exec_id).log
        except wire.NotFound:  # the exec was deleted during the long-poll
            log = None
        if log is not None and not res["eof"]:  # where a reader on this host may read on by itself
            res["file"] = log.locate(res["cursor"])
        return res

    async def events(self, p: Params) -> dict:
        since = p.int("since", 0)
        evs = await self.c.journal.wait_since(since, _timeout(p))
        return {"events": evs, "seq": self.c.journal.seq}

    async def hosts(self, p: Params) -> None:
        """hosts {peers: [[ip, name, ...], ...]}: the other containers of our network, for our /etc/hosts."""
        raw = p.raw.get("peers")
        if not isinstance(raw, list) or not all(isinstance(x, list) and all(isinstance(s, str) for s in x)
                                                for x in raw):
            raise wire.InvalidArgument("hosts: peers must be a list of [ip, name, ...] lists")
        self.c.set_peers(raw)

    async def reopen_log(self, p: Params) -> None:
        self.c.reopen_log()

    async def delete(self, p: Params) -> dict:
        """Delete the container (or one exec process). For the container the reply also carries the journal's
        events after `since`, the delete event included: the shim and its journal are gone after this reply."""
        exec_id = p.str("exec_id", "")
        since = p.int("since", 0)
        exit = await self.c.delete(exec_id)
        out: dict = {"exit": exit.to_wire() if exit else None}
        if not exec_id:
            out["events"] = self.c.journal.since(since, limit=1 << 30)
            self.stop.set()  # nothing left to own: the shim exits once this reply is out
        return out

    async def shutdown(self, p: Params) -> None:
        """Exit the shim. Refused while it still owns a container, unless force (the container is then killed)."""
        init = self.c.init
        if init is not None and not self.c.gone:
            if not p.bool("force"):
                raise wire.InvalidState(
                    f"cannot shut down the shim of {init.state.name} container {self.c.id}; delete it")
            await self.c.destroy()
        self.stop.set()
