"""Test harness: a manager with its own --root/--state in a temp dir, shimctl as a subprocess, and the teardown
that proves a test left nothing behind: it looks first (tests/leaks.py says what counts as left behind), then
removes every container and stops the manager, then looks again."""

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

from tests import leaks

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def shared_tools() -> str:
    """The third-party test tools beside the project (../shared/tools of the checkout; SHIMD_SHARED_TOOLS
    overrides, and a checkout elsewhere falls back to /work/shared/tools, where this machine kind keeps them)."""
    env = os.environ.get("SHIMD_SHARED_TOOLS")
    if env:
        return env
    beside = os.path.join(os.path.dirname(REPO), "shared", "tools")
    return beside if os.path.isdir(beside) else "/work/shared/tools"
PY = sys.executable
BASE_PREFIX = "/tmp/sdt-"
# the manager outages the issues ask for last a minute (containerd drops exits after about 15 s); CI runs 20 s,
# past those 15, unless told (SHIMD_TEST_OUTAGE=60)
OUTAGE = float(os.environ.get("SHIMD_TEST_OUTAGE", "20"))


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
    since: int = field(default_factory=leaks.boot_ticks)  # when the test began, for zombies of pytest's tree
    ids: set[str] = field(default_factory=set)  # every container id of the test, known after cleanup()
    managers: set[int] = field(default_factory=set)  # pids of every manager the test ran
    wrap: list[str] = field(default_factory=list)  # what every manager runs under unless told (a netns: nsenter)
    manager_env: dict = field(default_factory=dict)  # over os.environ for every manager (the CRI tests: SHIMD_CRI=1)

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
        cmd = (self.wrap if wrap is None else wrap) + [PY, "-m", "manager", "--root", self.root, "--state",
                                                       self.state, *extra]
        with open(log, "wb") as f:
            self.proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         env={**os.environ, **self.manager_env, **(env or {})}, cwd=REPO)
        self.managers.add(self.proc.pid)
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

    def ctl_killing_the_manager(self, *args: str, timeout: float = 60) -> int:
        """A CLI command that is to make the manager die (a fault point): the manager's exit status once it has
        died, the CLI stopped then, rather than left to wait out the client's RESTART_GRACE (5 s) for a manager
        that nobody will start meanwhile. Fails at once if the command ends while the manager lives."""
        assert self.proc is not None
        cli = subprocess.Popen([PY, "-m", "shimctl", "--address", self.sock, *args], stdin=subprocess.DEVNULL,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=REPO)
        try:
            deadline = time.monotonic() + timeout
            while self.proc.poll() is None:
                if cli.poll() is not None and self.proc.poll() is None:
                    time.sleep(0.5)  # the manager may be dying as the CLI hears of it
                    if self.proc.poll() is None:
                        raise AssertionError(f"shimctl {' '.join(args)} ended ({cli.returncode}) and the manager "
                                             f"lives: the fault point was not reached ({cli.stderr.read()!r})")
                assert time.monotonic() < deadline, f"the manager did not die within {timeout:g}s"
                time.sleep(0.02)
        finally:
            cli.kill()
            cli.wait(10)
            cli.stderr.close()  # type: ignore[union-attr]
        rc = self.proc.returncode
        self.proc = None
        return rc

    # --- what exists ---------------------------------------------------------------------------------------

    def shims(self) -> list[psutil.Process]:
        return [p for p in our_processes(self.base) if "shimd" in " ".join(p.cmdline()) and " start " in
                " ".join(p.cmdline())]

    def container_ids_on_disk(self) -> list[str]:
        d = os.path.join(self.root, "containers")
        return sorted(os.listdir(d)) if os.path.isdir(d) else []

    # --- teardown ---------------------------------------------------------------------------------------

    def manager_pid(self) -> int:
        """The live manager serving this state dir (its pid file), or 0."""
        try:
            pid = int(open(os.path.join(self.state, "shimd.pid")).read().strip())
            return pid if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE else 0
        except (OSError, ValueError, psutil.Error):
            return 0

    def listing(self) -> leaks.Listing:
        """What the test may leave: the manager's `list all`, or with no manager running the containers with
        metadata on disk (what a manager starting now would list)."""
        from shimproto.client import Client

        if pid := self.manager_pid():
            self.managers.add(pid)
            c = Client(self.sock, timeout=15)
            try:
                entries = c.call("list", {"all": True}, idempotent=True)
                return leaks.Listing({x["id"]: {"status": x["status"], "shim_pid": x["shim_pid"]}
                                      for x in entries}, pid, self.managers)  # type: ignore[union-attr]
            except Exception:
                pass
            finally:
                c.close()
        return leaks.Listing({id: {"status": "unknown", "shim_pid": None} for id in self.container_ids_on_disk()
                              if os.path.exists(os.path.join(self.root, "containers", id, "meta.json"))},
                             managers=self.managers)

    def left_behind(self, settle: float = 3.0) -> list[str]:
        """What the test left that the manager does not account for, looked at before anything is cleaned."""
        return leaks.check(self.base, self.listing(), self.since, self.tag, settle)

    def cleanup(self) -> list[str]:
        """Check what the test left, then remove every container, stop the manager, check that nothing survived,
        and purge what did. Returns the findings of both checks (empty when clean)."""
        problems = [f"left by the test: {p}" for p in self.left_behind()]
        ids = leaks.container_ids(self.base, self.tag)
        if not self.manager_pid():
            self.proc = None
            try:
                self.start_manager()
            except AssertionError as e:
                problems.append(f"could not restart the manager for cleanup: {e}")
        if self.manager_pid():
            r = self.ctl("ps", "-a", "-q", timeout=30)
            if all_ids := r.out.split():
                rr = self.ctl("rm", "-f", *all_ids, timeout=120)
                if rr.rc != 0:
                    problems.append(f"rm -f failed: {rr.err.strip()}")
            if self.proc is not None:
                self.kill_manager(signal.SIGTERM)
            else:
                os.kill(self.manager_pid(), signal.SIGTERM)
        try:
            wait_for(lambda: not our_processes(self.base), 10, "shims and containers to exit", interval=0.1)
        except AssertionError:
            pass  # the check below names them
        ids |= leaks.container_ids(self.base, self.tag)
        after = leaks.Listing(managers=self.managers)
        problems += [f"after rm -f: {p}" for p in leaks.check(self.base, after, self.since, self.tag)]
        leaks.purge(self.base, ids, self.managers)
        self.ids = ids
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
    """Live processes that belong to a test base dir: every process whose command line names it (managers,
    shims, runc, clients), every process in the cgroup of one of its containers (leaks.container_ids: removed
    and unnamed ones included), and every process below one of its shims, whatever its parent chain."""
    table = leaks.proc_table()
    ids = leaks.container_ids(base, tag_of(base))
    mine = {os.getpid(), *leaks.ancestors(table, os.getpid())}
    shims = {p.pid for p in table.values() if leaks.shim_id(p, base) is not None}
    out = []
    for p in table.values():
        if p.pid in mine or p.zombie:
            continue
        if leaks.mentions(p, base) or leaks.cgroup_ids(p) & ids or set(leaks.ancestors(table, p.pid)) & shims:
            try:
                out.append(psutil.Process(p.pid))
            except psutil.Error:
                pass
    return out


def leftovers(base: str) -> list[str]:
    """Mounts (in every mount namespace; a live shim's own rootfs excepted), runtime state, shim state and
    cgroups (every hierarchy) of any container of the test under base: what outlived its containers."""
    return [p for p in leaks.left_behind(base, leaks.Listing(), tag=tag_of(base))
            if not p.startswith(("shim left", "process left", "container process left", "zombie"))
            and not p.startswith("container files left")]


def zombies_of(pids: set[int]) -> list[str]:
    out = []
    for p in psutil.process_iter(["pid", "ppid", "status", "name"]):
        if p.info["status"] == psutil.STATUS_ZOMBIE and p.info["ppid"] in pids:
            out.append(f"zombie {p.info['pid']} ({p.info['name']}) of {p.info['ppid']}")
    return out


def remove_base(base: str) -> None:
    if base.startswith(BASE_PREFIX):
        shutil.rmtree(base, ignore_errors=True)


def spares_of(env: Env) -> list[psutil.Process]:
    """The idle spare shims of env's manager's template (at most one)."""
    want = ["template", "--spare", "--parent", str(env.manager_pid())]
    return [p for p in psutil.process_iter(["cmdline"]) if (p.info["cmdline"] or [])[-4:] == want]
