"""Debian's containerd with containerd-shim-runc-v2, behind the same verbs as the other systems (systems.py): all it
makes stays under the bench's directory but its shims' sockets (/run/containerd/s/<hash>, removed by name)."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess

import psutil
from systems import BUSYBOX_SLEEP, _alive_since, _kill_and_wait, _stop
from util import run, say, timed, wait_for


class Containerd:
    name = "containerd"

    def __init__(self, base: str, rootfs: str, ns: str, started: float) -> None:
        self.dir = os.path.join(base, "containerd")
        os.makedirs(self.dir)
        self.sock = os.path.join(self.dir, "containerd.sock")
        self.config = os.path.join(self.dir, "config.toml")
        self.runc_root = os.path.join(self.dir, "runc")
        self.fifo_dir = os.path.join(self.dir, "fifo")
        self.ns = ns
        with open(self.config, "w") as f:
            f.write(f'version = 2\nroot = "{self.dir}/root"\nstate = "{self.dir}/state"\n'
                    f'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n[grpc]\n  address = "{self.sock}"\n'
                    f'[plugins."io.containerd.internal.v1.opt"]\n  path = "{self.dir}/opt"\n')
        self.rootfs = rootfs
        self.log = open(os.path.join(base, "containerd.log"), "ab")
        self.proc: subprocess.Popen | None = None
        self.started = started
        self.made: set[str] = set()
        self.run_dir_existed = os.path.exists("/run/containerd")

    def ctl(self, *args: str) -> list[str]:
        return ["ctr", "-a", self.sock, "-n", self.ns, *args]

    def _run_args(self) -> list[str]:
        # --seccomp: containerd's default profile (docker's), as shimd and the runc bundle apply one
        return ["--runc-root", self.runc_root, "--fifo-dir", self.fifo_dir, "--env", "PATH=/bin", "--seccomp",
                "--rootfs", self.rootfs]

    def start_daemon(self) -> None:
        self.proc = subprocess.Popen(["containerd", "--config", self.config], stdin=subprocess.DEVNULL,
                                     stdout=self.log, stderr=self.log)

    def kill_daemon(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(15)

    def wait_serving(self, timeout: float = 30) -> None:
        wait_for(lambda: run(self.ctl("version"), check=False).returncode == 0, timeout, "containerd to serve", 0.02)

    def daemon_pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def running_ids(self) -> set[str]:
        p = run(self.ctl("task", "ls"), check=False, capture=True, timeout=30)
        if p.returncode != 0:
            return set()
        return {ln.split()[0] for ln in p.stdout.decode().splitlines()[1:] if " RUNNING" in ln}

    def run_true(self, id: str) -> float:
        self.made.add(id)
        return timed(self.ctl("run", "--rm", *self._run_args(), id, "/bin/true"))

    def run_detached(self, id: str) -> float:
        self.made.add(id)
        return timed(self.ctl("run", "-d", *self._run_args(), id, *BUSYBOX_SLEEP))

    def remove(self, id: str) -> None:
        run(self.ctl("task", "rm", "-f", id), check=False)  # kills it first; fails harmlessly when no task
        run(self.ctl("container", "rm", id))

    def init_pid(self, id: str) -> int:
        p = run(self.ctl("task", "ls"), capture=True)
        for ln in p.stdout.decode().splitlines()[1:]:
            f = ln.split()
            if f and f[0] == id:
                return int(f[1])
        raise RuntimeError(f"containerd: no task {id}")

    def events_cmd(self) -> list[str]:
        return self.ctl("events")

    @staticmethod
    def event_match(line: str, type: str, id: str) -> dict | None:
        """The event of line if it is the init's /tasks/<type> event of id (`ctr events`: time ns topic {json})."""
        if f"/tasks/{type} " not in line or "{" not in line:
            return None
        try:
            ev = json.loads(line[line.index("{"):])
        except ValueError:
            return None
        if ev.get("container_id") == id and ev.get("id", id) == id:
            return ev
        return None

    def monitors(self) -> list[psutil.Process]:
        out = []
        for p in psutil.process_iter(["cmdline"]):
            cmd = p.info["cmdline"] or []
            if cmd and cmd[0].endswith("containerd-shim-runc-v2") and self.sock in " ".join(cmd):
                out.append(p)
        return out

    def helpers(self, shims: list[psutil.Process]) -> list[psutil.Process]:
        return []

    def ids(self) -> list[str]:
        p = run(self.ctl("container", "ls", "-q"), check=False, capture=True, timeout=30)
        return p.stdout.decode().split() if p.returncode == 0 else []

    def shim_socket(self, id: str) -> str:
        """Where containerd-shim-runc-v2 1.6 binds its socket: /run/containerd/s/sha256(address/ns/id)."""
        path = os.path.join("/", self.sock.lstrip("/"), self.ns, id)
        return os.path.join("/run/containerd/s", hashlib.sha256(path.encode()).hexdigest())

    def cleanup(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            for id in self.ids():
                try:
                    self.remove(id)
                except Exception as e:  # noqa: BLE001
                    say(f"cleanup: containerd rm {id}: {e}")
            run(self.ctl("namespaces", "rm", self.ns), check=False)
            _stop(self.proc)
        _kill_and_wait([p for p in self.monitors() if _alive_since(p.pid, self.started)], "containerd shim")
        if os.path.isdir(self.runc_root):
            p = run(["runc", "--root", self.runc_root, "list", "-q"], check=False, capture=True)
            for id in p.stdout.decode().split():
                say(f"cleanup: runc delete --force {id} (containerd)")
                run(["runc", "--root", self.runc_root, "delete", "--force", id], check=False)
        for id in self.made:
            try:
                os.unlink(self.shim_socket(id))
                say(f"cleanup: removed containerd shim socket of {id}")
            except FileNotFoundError:
                pass
        if not self.run_dir_existed:  # made by this run's shims: take it away again if nothing else is in it
            for d in ("/run/containerd/s", "/run/containerd"):
                try:
                    os.rmdir(d)
                except OSError:
                    pass
        self.log.close()
