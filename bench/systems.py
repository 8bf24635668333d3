"""The three systems under test, each behind the same few verbs: runc alone (the floor), shimd, and Debian's
containerd with containerd-shim-runc-v2.

Each keeps everything it makes under the bench's own directory (containerd: root, state, runc root, FIFOs, the opt
plugin's directory; its shims' sockets are the one exception, /run/containerd/s/<hash>, removed by name), records
every container id it was asked to make, and `cleanup()` removes all of it, the daemon included, whatever state a
failure left it in. Container ids carry the run's prefix, so leftovers are recognisable by id and by cgroup.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time

import psutil
from util import PY, REPO, manager_cmd, run, say, timed, wait_for

from shimd.ocispec import seccomp_filter

BUSYBOX_SLEEP = ["sleep", "100000"]


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM a daemon, SIGKILL it after 30 s."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def _alive_since(pid: int, since: float) -> psutil.Process | None:
    """The process pid if it exists and was started after `since` (so a reused pid is never taken for ours)."""
    try:
        p = psutil.Process(pid)
        return p if p.create_time() >= since - 1 and p.status() != psutil.STATUS_ZOMBIE else None
    except psutil.Error:
        return None


def _kill_and_wait(procs: list[psutil.Process], what: str) -> None:
    for p in procs:
        say(f"cleanup: SIGKILL leftover {what} {p.pid}")
        try:
            p.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(procs, timeout=10)


class Runc:
    name = "runc"

    def __init__(self, base: str, rootfs: str) -> None:
        self.root = os.path.join(base, "runc-root")
        self.bundles = os.path.join(base, "bundles")
        self.made: set[str] = set()
        for kind, args in (("true", ["/bin/true"]), ("sleep", BUSYBOX_SLEEP)):
            b = os.path.join(self.bundles, kind)
            os.makedirs(b)
            run(["runc", "spec", "--bundle", b])
            with open(os.path.join(b, "config.json")) as f:
                spec = json.load(f)
            spec["process"].update(terminal=False, args=args)
            spec["root"] = {"path": rootfs, "readonly": True}
            # the seccomp filter shimd gives a container with these capabilities (runc spec's has none): the same
            # work for runc, whose create compiles it (about a third of its create time here)
            spec["linux"]["seccomp"] = seccomp_filter(False, "", tuple(spec["process"]["capabilities"]["bounding"]))
            with open(os.path.join(b, "config.json"), "w") as f:
                json.dump(spec, f)

    def _runc(self, *args: str) -> list[str]:
        return ["runc", "--root", self.root, *args]

    def run_true(self, id: str) -> float:
        self.made.add(id)
        return timed(self._runc("run", "--bundle", os.path.join(self.bundles, "true"), id))

    def run_detached(self, id: str) -> float:
        self.made.add(id)
        return timed(self._runc("run", "-d", "--bundle", os.path.join(self.bundles, "sleep"), id))

    def create_start(self, id: str) -> float:
        """runc create + runc start, timed together: the floor of an API create with start."""
        self.made.add(id)
        t0 = time.perf_counter()
        run(self._runc("create", "--bundle", os.path.join(self.bundles, "sleep"), id))
        run(self._runc("start", id))
        return time.perf_counter() - t0

    def remove(self, id: str) -> None:
        run(self._runc("delete", "--force", id))

    def ids(self) -> list[str]:
        p = run(self._runc("list", "-q"), check=False, capture=True)
        return p.stdout.decode().split() if p.returncode == 0 else []

    def cleanup(self) -> None:
        for id in self.ids():
            run(self._runc("delete", "--force", id), check=False)


class Shimd:
    name = "shimd"

    def __init__(self, base: str, started: float) -> None:
        self.root, self.state = os.path.join(base, "shimd-root"), os.path.join(base, "shimd-state")
        self.sock = os.path.join(self.state, "shimd.sock")
        self.log = open(os.path.join(base, "shimd-manager.log"), "ab")
        self.proc: subprocess.Popen | None = None
        self.started = started
        self.made: set[str] = set()
        self._client = None
        self._lock = threading.Lock()

    # --- the daemon ----------------------------------------------------------------------------------------
    def start_daemon(self) -> None:
        cmd, env = manager_cmd(self.root, self.state)
        self.proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=self.log,
                                     stderr=self.log)

    def kill_daemon(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(15)

    def wait_serving(self, timeout: float = 30) -> None:
        wait_for(lambda: self._try(lambda c: c.call("ping", idempotent=True, timeout=1)) is not None, timeout,
                 "the shimd manager to answer ping", 0.02)

    def daemon_pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    # --- the API (a client that stays connected; it reconnects by itself across manager restarts) -------------
    def client(self):  # -> shimproto.client.Client
        from shimproto.client import Client

        if self._client is None:
            self._client = Client(self.sock, timeout=60)
        return self._client

    def new_client(self, timeout: float = 60):
        from shimproto.client import Client

        return Client(self.sock, timeout=timeout)

    def _try(self, f):
        from shimproto.errors import ShimdError

        try:
            return f(self.client())
        except ShimdError:
            return None

    def listing(self, client=None, all: bool = False) -> list[dict]:
        return (client or self.client()).call("list", {"all": all}, idempotent=True, timeout=30)

    def api_create_start(self, client, id: str) -> float:
        """create {spec, start: true} from a client that is already connected, timed to its answer."""
        self.made.add(id)
        spec = {"id": id, "image": "busybox", "args": BUSYBOX_SLEEP}
        t0 = time.perf_counter()
        client.call("create", {"spec": spec, "start": True})
        return time.perf_counter() - t0

    def api_remove(self, client, id: str) -> None:
        client.call("delete", {"id": id, "force": True})

    # --- the CLI, timed whole ------------------------------------------------------------------------------
    def ctl(self, *args: str) -> list[str]:
        return [PY, "-m", "shimctl", "--address", self.sock, *args]

    def run_true(self, id: str) -> float:
        self.made.add(id)
        return timed(self.ctl("run", "--rm", "--name", id, "busybox", "/bin/true"))

    def run_detached(self, id: str) -> float:
        self.made.add(id)
        return timed(self.ctl("run", "-d", "--name", id, "busybox", *BUSYBOX_SLEEP))

    def remove(self, id: str) -> None:
        self.api_remove(self.client(), id)

    def init_pid(self, id: str) -> int:
        return next(c["pid"] for c in self.listing() if c["id"] == id)

    def events_cmd(self) -> list[str]:
        return self.ctl("events", "--format", "json")

    @staticmethod
    def event_match(line: str, type: str, id: str) -> dict | None:
        """The event of line if it is the init's `type` event of id (shimctl events --format json)."""
        try:
            ev = json.loads(line)
        except ValueError:
            return None
        if ev.get("type") == type and ev.get("id") == id and not ev.get("exec_id"):
            return ev
        return None

    # --- processes -----------------------------------------------------------------------------------------
    def monitors(self) -> list[psutil.Process]:
        """The shims of the running containers, by the pids the manager lists."""
        out = []
        for c in self.listing():
            try:
                out.append(psutil.Process(c["shim_pid"]))
            except (psutil.Error, KeyError, ValueError):
                pass
        return out

    def helpers(self, shims: list[psutil.Process]) -> list[psutil.Process]:
        """The manager's other descendants (a warm template, for instance): not shims, not short-lived runc."""
        ours = {p.pid for p in shims}
        try:
            kids = psutil.Process(self.daemon_pid()).children(recursive=True)
        except psutil.Error:
            return []
        return [k for k in kids if k.pid not in ours and _name(k) not in ("runc", "shimd-runc")]

    def ids(self) -> list[str]:
        try:
            return [c["id"] for c in self.listing(all=True)]
        except Exception:  # noqa: BLE001 - cleanup takes whatever it can get
            return []

    def _shim_pids(self) -> list[int]:
        out = []
        shims = os.path.join(self.state, "shims")
        for id in os.listdir(shims) if os.path.isdir(shims) else []:
            try:
                with open(os.path.join(shims, id, "shim.pid")) as f:
                    out.append(int(f.read().strip()))
            except (OSError, ValueError):
                pass
        return out

    def cleanup(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            for id in self.ids():
                try:
                    self.api_remove(self.client(), id)
                except Exception as e:  # noqa: BLE001
                    say(f"cleanup: shimd rm -f {id}: {e}")
        if self._client is not None:
            self._client.close()
            self._client = None
        kids = []  # the manager's own children (a warm template, a shim being started): gone with it, or killed
        if self.proc is not None and self.proc.poll() is None:
            try:
                kids = psutil.Process(self.proc.pid).children(recursive=True)
            except psutil.Error:
                pass
            _stop(self.proc)
        # shims the manager could not remove: kill them, then their containers through the runtime's state
        left = [p for p in (_alive_since(pid, self.started) for pid in self._shim_pids()) if p is not None]
        left += [k for k in kids if _alive_since(k.pid, self.started) and k.pid not in {p.pid for p in left}]
        _kill_and_wait(left, "shimd shim")
        runc_root = os.path.join(self.state, "runc")
        if os.path.isdir(runc_root):
            p = run(["runc", "--root", runc_root, "list", "-q"], check=False, capture=True)
            for id in p.stdout.decode().split():
                say(f"cleanup: runc delete --force {id} (shimd)")
                run(["runc", "--root", runc_root, "delete", "--force", id], check=False)
        self.log.close()


def helper_kind(p: psutil.Process) -> str:
    """What a helper of the manager is, from its command line: the warm template, the CRI front, or its name."""
    try:
        cmd = " ".join(p.cmdline())
    except psutil.Error:
        return "gone"
    return "the warm template" if "shimd template" in cmd else "the CRI front" if "manager.cri" in cmd \
        else _name(p) or "?"


def _name(p: psutil.Process) -> str:
    try:
        return p.name()
    except psutil.Error:
        return ""
