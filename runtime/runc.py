"""The OCI runtime CLI: one class holding the global flags, one method per subcommand."""

from __future__ import annotations

import json
import os
import tempfile
from typing import Protocol

from .errors import classify
from .opts import CreateOpts, DeleteOpts, ExecOpts, KillOpts, UpdateOpts


class Monitor(Protocol):
    """Starts a process and waits for it; the caller's reaper stays the only waiter."""

    async def run(self, argv: list[str], *, stdin: int | None = None, stdout: int | None = None,
                  stderr: int | None = None, env: dict[str, str] | None = None, group: bool = False) -> int:
        """Run argv to completion with the given fds as its stdio (None: /dev/null); return its exit code. group:
        in a process group of its own, all of which is killed if the wait is cancelled."""
        ...


class Runc:
    def __init__(self, monitor: Monitor, binary: str = "runc", root: str | None = None,
                 log_dir: str | None = None, systemd_cgroup: bool = False,
                 env: dict[str, str] | None = None) -> None:
        self.monitor = monitor
        self.binary = binary
        self.root = root
        self.log_dir = log_dir
        self.systemd_cgroup = systemd_cgroup
        self.env = env

    def _global(self, log_path: str) -> list[str]:
        out = [self.binary, "--log", log_path, "--log-format", "json"]
        if self.root:
            out += ["--root", self.root]
        if self.systemd_cgroup:
            out.append("--systemd-cgroup")
        return out

    async def _run(self, sub: list[str], stdin: int | None = None, stdout: int | None = None,
                   stderr: int | None = None) -> None:
        fd, log_path = tempfile.mkstemp(prefix="runc-", suffix=".log", dir=self.log_dir)
        os.close(fd)
        try:
            code = await self.monitor.run(self._global(log_path) + sub, stdin=stdin, stdout=stdout,
                                          stderr=stderr, env=self.env)
            if code != 0:
                with open(log_path, errors="replace") as f:
                    raise classify(f"{self.binary} {sub[0]}", f.read(), code)
        finally:
            os.unlink(log_path)

    async def _output(self, sub: list[str]) -> bytes:
        with tempfile.TemporaryFile(dir=self.log_dir) as out:
            await self._run(sub, stdout=out.fileno())
            out.seek(0)
            return out.read()

    async def create(self, id: str, bundle: str, opts: CreateOpts, stdin: int | None = None,
                     stdout: int | None = None, stderr: int | None = None) -> None:
        """runc create; with terminal false runc hands these fds to the container itself."""
        await self._run(["create", "--bundle", bundle, *opts.args(), id], stdin, stdout, stderr)

    async def start(self, id: str) -> None:
        await self._run(["start", id])

    async def kill(self, id: str, sig: int, opts: KillOpts = KillOpts()) -> None:
        await self._run(["kill", *opts.args(), id, str(sig)])

    async def delete(self, id: str, opts: DeleteOpts = DeleteOpts()) -> None:
        await self._run(["delete", *opts.args(), id])

    async def state(self, id: str) -> dict:
        return json.loads(await self._output(["state", id]))

    async def exec(self, id: str, opts: ExecOpts, stdin: int | None = None, stdout: int | None = None,
                   stderr: int | None = None) -> None:
        """runc exec; with detach runc returns once the process runs and hands it these fds."""
        await self._run(["exec", *opts.args(), id], stdin, stdout, stderr)

    async def pause(self, id: str) -> None:
        await self._run(["pause", id])

    async def resume(self, id: str) -> None:
        await self._run(["resume", id])

    async def update(self, id: str, opts: UpdateOpts) -> None:
        await self._run(["update", *opts.args(), id])

    async def ps(self, id: str) -> list[int]:
        """Host pids of every process in the container."""
        return list(json.loads(await self._output(["ps", "--format", "json", id])) or [])

    async def stats(self, id: str) -> dict:
        """One `runc events --stats` sample: the "data" object (cpu, memory, pids, ...)."""
        return json.loads(await self._output(["events", "--stats", id])).get("data", {})
