"""Test harness: a manager with its own --root/--state in a temp dir, shimctl as a subprocess, and the checks
that prove a test left nothing behind (processes, zombies, mounts, runtime state, cgroups)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import psutil

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PY = sys.executable
BASE_PREFIX = "/tmp/sdt-"


def wait_for(pred: Callable[[], object], timeout: float = 10.0, what: str = "condition",
             interval: float = 0.02) -> object:
    """Poll pred until it returns something truthy; fail with `what` after timeout seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


@dataclass
class Result:
    rc: int
    out: str
    err: str

    def json(self) -> object:
        return json.loads(self.out)


class Cli:
    """shimctl calls on top of a `ctl` that runs it somewhere (here, or inside the systemd test's machine)."""

    def ctl(self, *args: str, timeout: float = 60) -> Result:
        raise NotImplementedError

    def ok(self, *args: str, timeout: float = 60) -> Result:
        r = self.ctl(*args, timeout=timeout)
        assert r.rc == 0, f"shimctl {' '.join(args)} -> {r.rc}: {r.err.strip()}"
        return r

    def inspect(self, id: str) -> dict:
        return self.ok("inspect", id).json()[0]  # type: ignore[index]


@dataclass
class Env(Cli):
    base: str
    proc: subprocess.Popen | None = None
    log_files: list[str] = field(default_factory=list)

    @property
    def root(self) -> str:
        return os.path.join(self.base, "root")

    @property
    def state(self) -> str:
        return os.path.join(self.base, "state")

    @property
    def sock(self) -> str:
        return os.path.join(self.state, "shimd.sock")

    # --- the manager ---------------------------------------------------------------------------------------

    def start_manager(self, *extra: str, wrap: list[str] | None = None, env: dict | None = None) -> None:
        log = os.path.join(self.base, f"manager-{len(self.log_files)}.log")
        self.log_files.append(log)
        cmd = (wrap or []) + [PY, "-m", "manager", "--root", self.root, "--state", self.state, *extra]
        with open(log, "wb") as f:
            self.proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         env={**os.environ, **(env or {})}, cwd=REPO)
        wait_for(lambda: self._serving() or self._died(), 30, "the manager to serve")
        assert self.proc.poll() is None, f"manager exited: {self.manager_log()}"

    def _serving(self) -> bool:
        try:
            return self.ctl("ps", timeout=10).rc == 0
        except subprocess.TimeoutExpired:
            return False

    def _died(self) -> bool:
        return self.proc is not None and self.proc.poll() is not None

    def manager_log(self) -> str:
        return "".join(open(f, errors="replace").read() for f in self.log_files if os.path.exists(f))

    def kill_manager(self, sig: int = signal.SIGKILL) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        rc = self.proc.wait(15)
        self.proc = None
        return rc

    # --- the CLI -------------------------------------------------------------------------------------------

    def ctl(self, *args: str, timeout: float = 60, input: str | None = None) -> Result:
        p = subprocess.run([PY, "-m", "shimctl", "--address", self.sock, *args], capture_output=True, text=True,
                           timeout=timeout, cwd=REPO, input=input, stdin=None if input else subprocess.DEVNULL)
        return Result(p.returncode, p.stdout, p.stderr)

    # --- what exists ---------------------------------------------------------------------------------------

    def shims(self) -> list[psutil.Process]:
        return [p for p in our_processes(self.base) if "shimd" in " ".join(p.cmdline()) and " start " in
                " ".join(p.cmdline())]

    def container_ids_on_disk(self) -> list[str]:
        d = os.path.join(self.root, "containers")
        return sorted(os.listdir(d)) if os.path.isdir(d) else []

    # --- teardown ------------------------------------------------------------------------------------------

    def cleanup(self) -> list[str]:
        """Remove every container, stop the manager, and return what was left behind (empty when clean)."""
        problems: list[str] = []
        if self.proc is None:
            try:
                self.start_manager()
            except AssertionError as e:
                problems.append(f"could not restart the manager for cleanup: {e}")
        if self.proc is not None:
            r = self.ctl("ps", "-a", "-q", timeout=30)
            ids = r.out.split()
            if ids:
                rr = self.ctl("rm", "-f", *ids, timeout=120)
                if rr.rc != 0:
                    problems.append(f"rm -f failed: {rr.err.strip()}")
            self.kill_manager(signal.SIGTERM)
        try:
            wait_for(lambda: not our_processes(self.base), 10, "shims and containers to exit")
        except AssertionError:
            for p in our_processes(self.base):
                problems.append(f"process left: {p.pid} {' '.join(p.cmdline())}")
                _kill(p)
        problems += leftovers(self.base)
        return problems

    @property
    def tag(self) -> str:
        return tag_of(self.base)

    def name(self, suffix: str) -> str:
        """A container id unique to this test, so cgroups and runtime state never collide across tests."""
        return f"{self.tag}-{suffix}"


def tag_of(base: str) -> str:
    return "t" + os.path.basename(base).removeprefix("sdt-").lower()


def new_env() -> Env:
    os.makedirs("/tmp", exist_ok=True)
    return Env(tempfile.mkdtemp(prefix="sdt-", dir="/tmp"))


def _kill(p: psutil.Process) -> None:
    try:
        p.kill()
    except psutil.Error:
        pass


def our_processes(base: str) -> list[psutil.Process]:
    """Live processes that belong to a test base dir: shims, managers, runc, and container processes (whose
    parent chain leads to one of our shims; cgroup membership is not looked at)."""
    out = []
    me = os.getpid()
    for p in psutil.process_iter(["pid", "cmdline", "status"]):
        try:
            if p.pid == me or p.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            cmd = " ".join(p.info["cmdline"] or [])
            if base in cmd:
                out.append(p)
                continue
            for a in p.parents():
                if base in " ".join(a.cmdline()) and "shimd" in " ".join(a.cmdline()):
                    out.append(p)
                    break
        except psutil.Error:
            continue
    return out


def leftovers(base: str) -> list[str]:
    """Mounts, runtime state and cgroups that outlived a test under base."""
    problems = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            mp = line.split()[4]
            if mp.startswith(base):
                problems.append(f"mount left: {mp}")
    tag = tag_of(base)
    for ctrl in ("memory", "pids", "cpu", "freezer", "devices", "unified"):
        d = os.path.join("/sys/fs/cgroup", ctrl, "shimd")
        if os.path.isdir(d):
            problems += [f"cgroup left: {d}/{n}" for n in os.listdir(d) if n.startswith(tag)]
    runc_root = os.path.join(base, "state", "runc")
    if os.path.isdir(runc_root) and os.listdir(runc_root):
        problems.append(f"runtime state left: {os.listdir(runc_root)}")
    return problems


def zombies_of(pids: set[int]) -> list[str]:
    out = []
    for p in psutil.process_iter(["pid", "ppid", "status", "name"]):
        if p.info["status"] == psutil.STATUS_ZOMBIE and p.info["ppid"] in pids:
            out.append(f"zombie {p.info['pid']} ({p.info['name']}) of {p.info['ppid']}")
    return out


def remove_base(base: str) -> None:
    if base.startswith(BASE_PREFIX):
        shutil.rmtree(base, ignore_errors=True)
