"""A minimal Debian booted under systemd-nspawn, with a real systemd as its PID 1, for the systemd test.

- Boot: a temporary copy of the image (tests/systemd_image.py) is booted by
  `systemd-nspawn --boot --register=no --keep-unit --console=passive` from a cgroup of its own, created under this
  process's cgroup in every hierarchy. `--private-network` gives the container a network namespace of its own and
  with it CAP_NET_ADMIN, which runc needs to bring up a container's loopback; `--system-call-filter=add_key keyctl`
  lets runc make its session keyring. nspawn mounts the cgroup v1 controllers read-only (only the name=systemd
  subtree is delegated); they are remounted read-write inside, so runc can make the containers' cgroups, which
  land under our own cgroup (the container's cgroup namespace root) and go away with it. The unit is installed
  from /src/systemd/shimd.service.
- Commands run inside with `nsenter -t <PID 1> -a` and a clean environment; systemctl only once
  /run/systemd/private exists. shimctl calls (`ctl`, `ok`, `inspect`) are tests.harness.Cli's, run inside.
- halt() stops the container (SIGRTMIN+3 to its PID 1), waits for nspawn to exit, removes its cgroups and the
  rootfs copy, and returns whatever of it is left running or mounted on the host.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field

import psutil

from tests.harness import REPO, Cli, Result, wait_for
from tests.systemd_image import INNER_ENV

UNIT = "shimd.service"
DROPIN_DIR = "/run/systemd/system/shimd.service.d"


# --- cgroups of our own ----------------------------------------------------------------------------------------

def own_cgroup_dirs(name: str) -> list[str]:
    """For every cgroup hierarchy this process is in, the path of a child `name` of its current cgroup there."""
    mounts: list[tuple[str, str, set[str]]] = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, right = line.split(" - ")
            fstype, _src, opts = right.split()[:3]
            if fstype in ("cgroup", "cgroup2"):
                mounts.append((left.split()[4], fstype, set(opts.split(","))))
    out = []
    for line in open("/proc/self/cgroup").read().splitlines():
        _id, ctrls, path = line.split(":", 2)
        for mp, fstype, opts in mounts:
            if (not ctrls and fstype == "cgroup2") or (ctrls and fstype == "cgroup" and set(ctrls.split(",")) <= opts):
                out.append(os.path.join(mp, path.lstrip("/"), name))
                break
    return out


def make_cgroups(dirs: list[str]) -> None:
    for d in dirs:
        os.makedirs(d, exist_ok=True)
        for knob in ("cpuset.cpus", "cpuset.mems"):  # a new cpuset is empty: no process may join it
            p = os.path.join(d, knob)
            if os.path.exists(p) and not open(p).read().strip():
                with open(p, "w") as f:
                    f.write(open(os.path.join(os.path.dirname(d), knob)).read().strip())


def remove_cgroups(dirs: list[str]) -> list[str]:
    """rmdir each tree bottom-up; return those that could not be removed."""
    left = []
    for d in dirs:
        for sub, _dirs, _files in sorted(os.walk(d), key=lambda t: -t[0].count("/")):
            with contextlib.suppress(FileNotFoundError, OSError):
                os.rmdir(sub)
        if os.path.isdir(d):
            left.append(d)
    return left


def cgroup_pids(dirs: list[str]) -> list[int]:
    pids = []
    for d in dirs:
        for sub, _dirs, files in os.walk(d):
            if "cgroup.procs" in files:
                with contextlib.suppress(OSError):
                    pids += [int(x) for x in open(os.path.join(sub, "cgroup.procs")).read().split()]
    return pids


# --- the booted container --------------------------------------------------------------------------------------

@dataclass
class Machine(Cli):
    name: str
    root: str
    log_path: str
    cgroups: list[str]
    proc: subprocess.Popen | None = None
    pid: int = 0  # the inner PID 1, as the host sees it
    timings: dict[str, float] = field(default_factory=dict)

    # --- running things inside -----------------------------------------------------------------------------

    def sh(self, *cmd: str, timeout: float = 60, check: bool = True, input: str | None = None) -> Result:
        p = subprocess.run(["nsenter", "-t", str(self.pid), "-a", "--", *cmd], capture_output=True, text=True,
                           env=INNER_ENV, timeout=timeout, input=input,
                           stdin=None if input is not None else subprocess.DEVNULL)
        r = Result(p.returncode, p.stdout, p.stderr)
        if check:
            assert r.rc == 0, f"{' '.join(cmd)} -> {r.rc}: {(r.out + r.err).strip()}"
        return r

    def py(self, code: str, *args: str) -> object:
        """Run python3 code inside; it prints one JSON value."""
        return json.loads(self.sh("python3", "-c", code, *args).out)

    def systemctl(self, *args: str, check: bool = True, timeout: float = 90) -> Result:
        return self.sh("systemctl", "--no-pager", *args, check=check, timeout=timeout)

    def show(self, *props: str) -> dict[str, str]:
        out = self.systemctl("show", UNIT, *[f"-p{p}" for p in props]).out
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def prop(self, p: str) -> str:
        return self.show(p)[p]

    def main_pid(self) -> int:
        return int(self.prop("MainPID"))

    def ctl(self, *args: str, timeout: float = 60) -> Result:
        return self.sh("shimctl", *args, check=False, timeout=timeout)

    def alive(self, pid: int) -> bool:
        """Is pid (in the container's pid namespace) alive and not a zombie?"""
        r = self.sh("cat", f"/proc/{pid}/stat", check=False)
        return r.rc == 0 and r.out.split(") ", 1)[1][0] != "Z"

    def kill(self, sig: str, pid: int) -> None:
        """kill -SIG pid inside (the shell's kill: minbase has no kill binary)."""
        self.sh("sh", "-c", f"kill -{sig} {pid}")

    def cmdline(self, pid: int) -> str:
        return self.sh("cat", f"/proc/{pid}/cmdline").out.replace("\0", " ").strip()

    def mnt_ns(self, pid: int | str) -> str:
        return self.sh("readlink", f"/proc/{pid}/ns/mnt").out.strip()

    def hold_mnt_ns(self, pid: int) -> int:
        """An fd that keeps pid's mount namespace alive, so a later one cannot reuse its inode number."""
        return os.open(f"/proc/{self.pid}/root/proc/{pid}/ns/mnt", os.O_RDONLY)

    def journal(self) -> str:
        return self.sh("journalctl", "-u", UNIT, "--no-pager", "-o", "cat", check=False).out

    def processes(self, *words: str) -> list[str]:
        """Processes inside whose command line contains any of words ("pid cmdline")."""
        return self.py(_PROCS, *words)  # type: ignore[return-value]

    def mounts_mentioning(self, text: str) -> list[str]:
        """Mounts inside, in every mount namespace, whose mountinfo line mentions text."""
        return self.py(_MOUNTS, text)  # type: ignore[return-value]

    # --- the unit --------------------------------------------------------------------------------------------

    def start(self) -> None:
        self.systemctl("start", UNIT)

    def active(self) -> dict[str, str]:
        return self.show("ActiveState", "SubState", "MainPID", "NRestarts", "StatusText", "Result")

    def dropin(self, name: str, text: str) -> None:
        self.sh("mkdir", "-p", DROPIN_DIR)
        self.sh("tee", f"{DROPIN_DIR}/{name}.conf", input=text)
        self.systemctl("daemon-reload")

    def reset(self) -> list[str]:
        """Remove every container, stop the unit, drop drop-ins; return what is left inside (empty when clean)."""
        problems: list[str] = []
        if self.prop("ActiveState") != "active":
            self.systemctl("reset-failed", UNIT, check=False)
            r = self.systemctl("start", UNIT, check=False)
            if r.rc:
                problems.append(f"cannot start {UNIT} for cleanup: {r.err.strip()}")
        ids = self.ctl("ps", "-a", "-q").out.split()
        if ids:
            r = self.ctl("rm", "-f", *ids, timeout=120)
            if r.rc:
                problems.append(f"rm -f {' '.join(ids)}: {r.err.strip()}")
        self.systemctl("stop", UNIT, check=False)
        self.sh("rm", "-rf", DROPIN_DIR)
        self.systemctl("daemon-reload")
        self.systemctl("reset-failed", UNIT, check=False)
        try:
            wait_for(lambda: not self.processes("shimd", "runc", "sleep"), 10, "shims and containers to exit")
        except AssertionError:
            problems += [f"process left inside: {p}" for p in self.processes("shimd", "runc", "sleep")]
        problems += [f"mount left inside: {m}" for m in self.mounts_mentioning("/var/lib/shimd/containers")]
        problems += [f"mount left inside: {m}" for m in self.mounts_mentioning("overlay")]
        left = self.sh("ls", "-A", "/var/lib/shimd/containers", "/run/shimd/runc", check=False).out.split()
        problems += [f"state left inside: {n}" for n in left if not n.endswith(":")]
        return problems

    # --- life ------------------------------------------------------------------------------------------------

    def boot(self) -> None:
        make_cgroups(self.cgroups)
        procs = " ".join(os.path.join(d, "cgroup.procs") for d in self.cgroups)
        cmd = ["sh", "-c", 'for f in $CGROUP_PROCS; do echo $$ > "$f" || exit 1; done; exec "$@"', "sh",
               "systemd-nspawn", "--quiet", "--boot", "--directory", self.root, "--machine", self.name,
               "--register=no", "--keep-unit", "--console=passive", "--private-network",
               "--system-call-filter=add_key keyctl", "--resolv-conf=off", "--timezone=off", "--link-journal=no",
               f"--bind-ro={REPO}:/src"]
        t0 = time.monotonic()
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                         env={**os.environ, "CGROUP_PROCS": procs}, start_new_session=True)

        def init_pid() -> int:
            if self.proc.poll() is not None:
                return -1
            for c in psutil.Process(self.proc.pid).children():
                with contextlib.suppress(psutil.Error):
                    if c.cmdline()[:1] and c.cmdline()[0].endswith("/systemd"):
                        return c.pid
            return 0

        pid = wait_for(init_pid, 30, "systemd-nspawn to start the container's PID 1")
        if pid == -1:
            raise BootFailed(f"systemd-nspawn exited with {self.proc.returncode}")
        self.pid = pid
        private = f"/proc/{pid}/root/run/systemd/private"
        wait_for(lambda: os.path.exists(private) or self.proc.poll() is not None, 30, "/run/systemd/private")
        if self.proc.poll() is not None:
            raise BootFailed(f"systemd-nspawn exited with {self.proc.returncode}")
        def settled() -> str:
            state = self.sh("systemctl", "is-system-running", check=False).out.strip()
            return "" if state in ("", "initializing", "starting") else state

        state = wait_for(settled, 30, "the boot to finish")
        self.timings["boot"] = time.monotonic() - t0
        if state not in ("running", "degraded"):
            raise BootFailed(f"system state {state!r}: {self.systemctl('--failed', check=False).out}")
        # nspawn mounts the cgroup v1 controllers read-only (it delegates only the name=systemd subtree); runc makes
        # the containers' cgroups there. Their root is our own cgroup (the container's cgroup namespace).
        for line in open(f"/proc/{pid}/mountinfo"):
            left, right = line.split(" - ")
            mp, opts = left.split()[4], left.split()[5].split(",")
            if right.split()[0] == "cgroup" and "ro" in opts and "name=systemd" not in right:
                self.sh("mount", "-o", "remount,bind,rw", mp)
        self.sh("install", "-m", "0644", "/src/systemd/shimd.service", f"/etc/systemd/system/{UNIT}")
        self.systemctl("daemon-reload")

    def log(self) -> str:
        try:
            return open(self.log_path, errors="replace").read()[-4000:]
        except OSError:
            return ""

    def halt(self) -> list[str]:
        """Stop the container and remove its rootfs copy and cgroups; return what is left on the host."""
        problems = []
        if self.proc is not None and self.proc.poll() is None:
            if self.pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.pid, signal.SIGRTMIN + 3)  # systemd: halt (in a container: exit)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                problems.append("the container did not halt within 30 s: killed")
                for p in (self.pid, self.proc.pid):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(p, signal.SIGKILL)
                self.proc.wait(30)
        with contextlib.suppress(AssertionError):
            wait_for(lambda: not cgroup_pids(self.cgroups), 10, "the container's processes to exit")
        problems += [f"process left in our cgroup: {p}" for p in cgroup_pids(self.cgroups)]
        problems += [f"cgroup left: {d}" for d in remove_cgroups(self.cgroups)]
        with open("/proc/self/mountinfo") as f:
            problems += [f"mount left: {line.split()[4]}" for line in f if self.root in line.split()[4]]
        for p in psutil.process_iter(["pid", "cmdline"]):
            cmd = " ".join(p.info["cmdline"] or [])
            if self.name in cmd or self.root in cmd:
                problems.append(f"process left: {p.pid} {cmd}")
        if not [p for p in problems if p.startswith("mount")]:
            shutil.rmtree(self.root, ignore_errors=True)
        with contextlib.suppress(FileNotFoundError, OSError):
            os.rmdir(f"/run/systemd/nspawn/propagate/{self.name}")
        return problems


class BootFailed(Exception):
    pass


_PROCS = r"""
import json, os, sys
out = []
for d in os.listdir("/proc"):
    if not d.isdigit() or int(d) == os.getpid():
        continue
    try:
        cmd = open(f"/proc/{d}/cmdline", "rb").read().replace(b"\0", b" ").decode().strip()
        state = open(f"/proc/{d}/stat").read().split(") ", 1)[1][0]
    except OSError:
        continue
    if state != "Z" and any(w in cmd for w in sys.argv[1:]):
        out.append(f"{d} {cmd}")
print(json.dumps(out))
"""

_MOUNTS = r"""
import json, os, sys
seen, out = set(), []
for d in os.listdir("/proc"):
    if not d.isdigit():
        continue
    try:
        ns = os.readlink(f"/proc/{d}/ns/mnt")
        if ns in seen:
            continue
        seen.add(ns)
        out += [f"{ns} {l.split()[4]}" for l in open(f"/proc/{d}/mountinfo") if sys.argv[1] in l]
    except OSError:
        continue
print(json.dumps(out))
"""
