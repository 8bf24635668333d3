"""The real unit file, systemd/shimd.service, under a real systemd (Debian 12's systemd 252) booted with
systemd-nspawn: Type=notify, KillMode=process with live-restore, MountFlags=slave, stop/start, WatchdogSec.

PID 1 of this machine is not systemd, so each session boots a minimal Debian in a container:

- Image, in two cached layers under /var/cache/shimd-tests/ (tarballs, each keyed by a hash of what went in):
  `base-*.tar` is `debootstrap --variant=minbase` with systemd, dbus, python3, python3-venv, runc and
  busybox-static (about 50 s, made once); `image-*.tar` adds a venv at /opt/shimd holding the project's
  dependencies, from wheels the host's pip builds (`pip wheel`, with the host's own index configuration) and
  installs offline inside (`chroot ... pip install --no-index`). Its key is the base key plus the dependency list
  of pyproject.toml, so it is rebuilt when the dependencies change and not when the source changes.
- The project itself is never baked in: the work tree is bind-mounted read-only at /src and a `.pth` file puts
  /src on the venv's path, which is what an editable install does. Each run thus tests the current source, with no
  build step and nothing written into the work tree. The console scripts of `[project.scripts]` are written into
  the venv each run, /usr/local/bin/shimd-manager, shimd and shimctl link to them (so the unit's ExecStart runs
  unchanged), and the unit is installed from /src/systemd/shimd.service.
- Boot: a temporary copy of the image (tar extraction, well under a second) is booted by
  `systemd-nspawn --boot --register=no --keep-unit --console=passive` from a cgroup of its own, created under this
  process's cgroup in every hierarchy. `--private-network` gives the container a network namespace of its own and
  with it CAP_NET_ADMIN, which runc needs to bring up a container's loopback; `--system-call-filter=add_key keyctl`
  lets runc make its session keyring. nspawn mounts the cgroup v1 controllers read-only (only the name=systemd
  subtree is delegated); they are remounted read-write inside, so runc can make the containers' cgroups, which
  land under our own cgroup (the container's cgroup namespace root) and go away with it.
- Commands run inside with `nsenter -t <PID 1> -a` and a clean environment; systemctl only once
  /run/systemd/private exists.

Tests skip (with nspawn's own output) only when the container cannot boot here. Teardown removes every container,
stops the unit, halts the container (SIGRTMIN+3 to its PID 1), waits for nspawn to exit, removes its cgroups and
the rootfs copy, and checks that nothing of it is left running or mounted on the host.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import tomllib
import uuid
from dataclasses import dataclass, field

import psutil
import pytest

from tests.harness import REPO, wait_for

pytestmark = pytest.mark.timeout(900)  # the first run builds the image (debootstrap ~50 s, more on a slow mirror)

CACHE = "/var/cache/shimd-tests"
SUITE = "bookworm"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
PACKAGES = ["systemd", "systemd-sysv", "dbus", "python3", "python3-venv", "runc", "busybox-static"]
VENV = "/opt/shimd"
INNER_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8",
             "HOME": "/root", "SYSTEMD_PAGER": "", "SYSTEMD_COLORS": "0"}
UNIT = "shimd.service"
DROPIN_DIR = "/run/systemd/system/shimd.service.d"


# --- the image -------------------------------------------------------------------------------------------------

def apt_mirror() -> str:
    """The Debian mirror the machine's apt sources use for SUITE (one-line and deb822 formats)."""
    files = ["/etc/apt/sources.list", *sorted(glob.glob("/etc/apt/sources.list.d/*"))]
    for path in files:
        try:
            text = open(path).read()
        except OSError:
            continue
        if path.endswith(".sources"):
            for block in re.split(r"\n\s*\n", text):
                fields = dict(re.findall(r"^(\w[\w-]*):\s*(.*)$", block, re.M))
                if SUITE in fields.get("Suites", "").split() and "main" in fields.get("Components", "").split():
                    return fields.get("URIs", "").split()[0]
        else:
            for line in text.splitlines():
                m = re.match(r"^deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+(\S+)\s+(.*)$", line.strip())
                if m and m.group(2) == SUITE and "main" in m.group(3).split():
                    return m.group(1)
    return DEFAULT_MIRROR


def _key(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def _pyproject() -> dict:
    with open(os.path.join(REPO, "pyproject.toml"), "rb") as f:
        return tomllib.load(f)["project"]


def _run(cmd: list[str], what: str, timeout: float, **kw) -> None:
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL, **kw)
    if p.returncode != 0:
        raise RuntimeError(f"{what} failed ({p.returncode}): {' '.join(cmd)}\n{(p.stdout + p.stderr)[-3000:]}")


def _tar_to(src_dir: str, dest: str) -> None:
    """Tar src_dir into dest atomically, then drop other tarballs of the same layer (the cache does not grow)."""
    tmp = f"{dest}.tmp{os.getpid()}"
    _run(["tar", "-C", src_dir, "--numeric-owner", "-cf", tmp, "."], "tar", 300)
    os.rename(tmp, dest)
    layer = os.path.basename(dest).split("-")[0]
    for old in glob.glob(os.path.join(CACHE, f"{layer}-*.tar")):
        if old != dest:
            os.unlink(old)


def _untar(tarball: str, dest: str) -> None:
    _run(["tar", "-C", dest, "--numeric-owner", "-xpf", tarball], "untar", 300)
    os.chmod(dest, 0o755)  # "/" must be searchable by the container's system users (dbus)


def _chroot(root: str, *cmd: str, timeout: float = 300) -> None:
    _run(["chroot", root, *cmd], f"chroot {' '.join(cmd)}", timeout, env=INNER_ENV)


def base_tarball(log) -> str:
    key = _key(SUITE, "minbase", PACKAGES)
    path = os.path.join(CACHE, f"base-{key}.tar")
    if os.path.exists(path):
        return path
    mirror = apt_mirror()
    build = tempfile.mkdtemp(prefix="build-base-", dir=CACHE)
    os.chmod(build, 0o755)  # the rootfs's "/"
    try:
        t0 = time.monotonic()
        _run(["debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}", SUITE, build, mirror],
             "debootstrap", 800)
        for junk in ("var/cache/apt/archives/*.deb", "var/lib/apt/lists/*_*", "usr/share/doc/*", "usr/share/man/*"):
            for p in glob.glob(os.path.join(build, junk)):
                shutil.rmtree(p) if os.path.isdir(p) and not os.path.islink(p) else os.unlink(p)
        _tar_to(build, path)
        log(f"built {path} from {mirror} in {time.monotonic() - t0:.0f}s")
    finally:
        shutil.rmtree(build, ignore_errors=True)
    return path


def image_tarball(log) -> str:
    """The base plus a venv with the project's dependencies (not the project itself)."""
    base = base_tarball(log)
    deps = sorted(_pyproject()["dependencies"])
    path = os.path.join(CACHE, f"image-{_key(os.path.basename(base), deps)}.tar")
    if os.path.exists(path):
        return path
    build = tempfile.mkdtemp(prefix="build-image-", dir=CACHE)
    os.chmod(build, 0o755)  # the rootfs's "/"
    try:
        t0 = time.monotonic()
        _untar(base, build)
        inner_py = subprocess.run(["chroot", build, "python3", "-c", "import sys; print(sys.version_info[:2])"],
                                  capture_output=True, text=True, env=INNER_ENV, check=True).stdout.strip()
        assert inner_py == str(sys.version_info[:2]), f"wheels for {sys.version_info[:2]} cannot go to {inner_py}"
        wheels = os.path.join(build, "tmp", "wheels")
        os.makedirs(wheels)
        _run([sys.executable, "-m", "pip", "wheel", "-q", "-w", wheels, *deps], "pip wheel", 600)
        _chroot(build, "python3", "-m", "venv", VENV)
        _chroot(build, f"{VENV}/bin/pip", "install", "-q", "--no-index", "--find-links", "/tmp/wheels", *deps)
        shutil.rmtree(wheels)
        _chroot(build, f"{VENV}/bin/python", "-m", "compileall", "-q", VENV)
        _tar_to(build, path)
        log(f"built {path} in {time.monotonic() - t0:.0f}s")
    finally:
        shutil.rmtree(build, ignore_errors=True)
    return path


def install_project(root: str) -> None:
    """Make /src (the bind-mounted work tree) the installed project: a .pth on the venv's path, the console
    scripts of [project.scripts] in the venv, and links to them in /usr/local/bin."""
    (site,) = glob.glob(os.path.join(root, VENV.lstrip("/"), "lib", "python3*", "site-packages"))
    with open(os.path.join(site, "_shimd_src.pth"), "w") as f:
        f.write("/src\n")
    for name, target in _pyproject()["scripts"].items():
        module, func = target.split(":")
        script = os.path.join(root, VENV.lstrip("/"), "bin", name)
        with open(script, "w") as f:
            f.write(f"#!{VENV}/bin/python\nimport sys\nfrom {module} import {func}\n"
                    f"if __name__ == '__main__':\n    sys.exit({func}())\n")
        os.chmod(script, 0o755)
        link = os.path.join(root, "usr", "local", "bin", name)
        if os.path.lexists(link):
            os.unlink(link)
        os.symlink(f"{VENV}/bin/{name}", link)


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
class R:
    rc: int
    out: str
    err: str


@dataclass
class Machine:
    name: str
    root: str
    log_path: str
    cgroups: list[str]
    proc: subprocess.Popen | None = None
    pid: int = 0  # the inner PID 1, as the host sees it
    timings: dict[str, float] = field(default_factory=dict)

    # --- running things inside -----------------------------------------------------------------------------

    def sh(self, *cmd: str, timeout: float = 60, check: bool = True, input: str | None = None) -> R:
        p = subprocess.run(["nsenter", "-t", str(self.pid), "-a", "--", *cmd], capture_output=True, text=True,
                           env=INNER_ENV, timeout=timeout, input=input,
                           stdin=None if input is not None else subprocess.DEVNULL)
        r = R(p.returncode, p.stdout, p.stderr)
        if check:
            assert r.rc == 0, f"{' '.join(cmd)} -> {r.rc}: {(r.out + r.err).strip()}"
        return r

    def py(self, code: str, *args: str) -> object:
        """Run python3 code inside; it prints one JSON value."""
        return json.loads(self.sh("python3", "-c", code, *args).out)

    def systemctl(self, *args: str, check: bool = True, timeout: float = 90) -> R:
        return self.sh("systemctl", "--no-pager", *args, check=check, timeout=timeout)

    def show(self, *props: str) -> dict[str, str]:
        out = self.systemctl("show", UNIT, *[f"-p{p}" for p in props]).out
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def prop(self, p: str) -> str:
        return self.show(p)[p]

    def main_pid(self) -> int:
        return int(self.prop("MainPID"))

    def ctl(self, *args: str, timeout: float = 60) -> R:
        return self.sh("shimctl", *args, check=False, timeout=timeout)

    def ok(self, *args: str, timeout: float = 60) -> R:
        r = self.ctl(*args, timeout=timeout)
        assert r.rc == 0, f"shimctl {' '.join(args)} -> {r.rc}: {r.err.strip()}"
        return r

    def inspect(self, id: str) -> dict:
        return json.loads(self.ok("inspect", id).out)[0]

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


def _say(msg: str) -> None:
    sys.stderr.write(f"\n[test_systemd] {msg}\n")


@pytest.fixture(scope="session")
def machine():
    for tool in ("systemd-nspawn", "debootstrap", "nsenter"):
        if not shutil.which(tool):
            pytest.skip(f"cannot boot systemd here: {tool} is not installed (scripts/setup installs it)")
    os.makedirs(CACHE, exist_ok=True)
    t0 = time.monotonic()
    with open(os.path.join(CACHE, ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one builder at a time
        image = image_tarball(_say)
    name = f"shimd-test-{uuid.uuid4().hex[:8]}"
    root = tempfile.mkdtemp(prefix=f"{name}-", dir="/var/tmp")
    m = Machine(name, os.path.join(root, "rootfs"), os.path.join(root, "nspawn.log"), own_cgroup_dirs(name))
    try:
        os.mkdir(m.root)
        _untar(image, m.root)
        install_project(m.root)
        m.timings["image"] = time.monotonic() - t0
        try:
            m.boot()
        except (BootFailed, AssertionError) as e:
            pytest.skip(f"systemd-nspawn cannot boot systemd here: {e}\nnspawn said:\n{m.log()}")
        _say(f"image ready in {m.timings['image']:.1f}s, booted in {m.timings['boot']:.2f}s "
             f"({m.sh('systemctl', '--version').out.splitlines()[0]})")
        yield m
    finally:
        problems = m.halt()
        shutil.rmtree(root, ignore_errors=True)
        if problems:
            pytest.fail("the systemd container left things behind on the host:\n  " + "\n  ".join(problems),
                        pytrace=False)


@pytest.fixture
def sd(machine):
    """The booted container, with shimd.service stopped and no container, before and after the test."""
    problems = machine.reset()
    assert not problems, problems
    yield machine
    problems = machine.reset()
    if problems:
        pytest.fail("test left things behind in the systemd container:\n  " + "\n  ".join(problems), pytrace=False)


STATUS = re.compile(r"^serving (\d+) containers \((\d+) running, \d+ with lost shims, \d+ creates rolled back, "
                    r"\d+ deletes finished\)$")


# --- the tests -------------------------------------------------------------------------------------------------

def test_start_returns_after_ready_with_our_status_and_containers_run(sd):
    assert sd.show("Type", "NotifyAccess", "KillMode") == {"Type": "notify", "NotifyAccess": "main",
                                                           "KillMode": "process"}
    sd.start()
    # systemctl start of a Type=notify unit returns once READY=1 arrived: the STATUS line sent with it is there
    # already, and the unit went active only after the manager's own start-up time
    st = sd.show("ActiveState", "SubState", "StatusText", "MainPID", "ExecMainStartTimestampMonotonic",
                 "ActiveEnterTimestampMonotonic", "ExecMainPID")
    assert (st["ActiveState"], st["SubState"]) == ("active", "running")
    assert STATUS.match(st["StatusText"]), st["StatusText"]
    assert STATUS.match(st["StatusText"]).groups() == ("0", "0")
    startup = (int(st["ActiveEnterTimestampMonotonic"]) - int(st["ExecMainStartTimestampMonotonic"])) / 1e6
    print(f"fork to READY=1: {startup * 1000:.0f} ms")
    assert startup > 0.02, "active at once: READY=1 was not waited for"
    assert st["MainPID"] == st["ExecMainPID"]
    assert "shimd-manager --root /var/lib/shimd --state /run/shimd" in sd.cmdline(int(st["MainPID"]))
    r = sd.ctl("run", "--rm", "busybox", "echo", "hi")
    assert (r.rc, r.out, r.err) == (0, "hi\n", "")
    assert sd.ctl("ps", "-a", "-q").out == ""


def _start_with_a_sleeper(sd) -> tuple[int, int, int]:
    """Start the unit and a container "c" running sleep: (container pid, shim pid, manager pid)."""
    sd.start()
    sd.ok("run", "-d", "--name", "c", "busybox", "sleep", "100000")
    info = sd.inspect("c")
    return info["pid"], info["shim_pid"], sd.main_pid()


def test_restart_and_kill_9_keep_the_container_with_the_same_pid(sd):
    pid, shim, main1 = _start_with_a_sleeper(sd)
    assert sd.cmdline(pid) == "sleep 100000"

    sd.systemctl("restart", UNIT)
    main2 = sd.main_pid()
    assert main2 != main1 and not sd.alive(main1)
    assert STATUS.match(sd.prop("StatusText")).groups() == ("1", "1")
    info = sd.inspect("c")
    assert (info["status"], info["pid"], info["shim_pid"]) == ("running", pid, shim)

    # kill -9 the manager: Restart=always brings it back (after RestartSec=1)
    restarts = int(sd.prop("NRestarts"))
    t0 = time.monotonic()
    sd.kill("9", main2)
    wait_for(lambda: (s := sd.active())["ActiveState"] == "active" and s["SubState"] == "running"
             and s["MainPID"] not in ("0", str(main2)), 20, "Restart=always to bring the manager back")
    print(f"kill -9 to active again: {time.monotonic() - t0:.2f}s")
    assert int(sd.prop("NRestarts")) == restarts + 1
    main3 = sd.main_pid()
    assert main3 != main2 and not sd.alive(main2)
    assert sd.alive(pid) and sd.cmdline(pid) == "sleep 100000" and sd.alive(shim)
    ps = json.loads(sd.ok("ps", "--format", "json").out)
    assert [(c["id"], c["status"], c["pid"], c["shim_pid"]) for c in ps] == [("c", "running", pid, shim)]

    # the third manager controls it fully
    sd.ok("kill", "c")
    assert sd.ok("wait", "c").out.strip() == "137"
    sd.ok("rm", "c")
    assert sd.ctl("ps", "-a", "-q").out == ""
    wait_for(lambda: not sd.alive(pid) and not sd.alive(shim), 10, "the container and its shim to go")


def test_mountflags_slave_containers_of_one_start_are_removed_by_the_next(sd):
    sd.start()
    main1 = sd.main_pid()
    ns1 = sd.mnt_ns(main1)
    assert ns1 != sd.mnt_ns(1), "MountFlags=slave: the manager has a mount namespace of its own"
    root_line = next(line for line in sd.sh("cat", f"/proc/{main1}/mountinfo").out.splitlines()
                     if line.split()[4] == "/")
    assert "master:" in root_line and "shared:" not in root_line, root_line  # a slave of PID 1's /

    for id in ("a", "b"):
        sd.ok("run", "-d", "--name", id, "busybox", "sh", "-c", "echo data > /file; sleep 100000")
    wait_for(lambda: sd.ok("exec", "a", "cat", "/file").out == "data\n", 10, "a's /file")
    shim, init = sd.inspect("a")["shim_pid"], sd.inspect("a")["pid"]
    assert sd.mnt_ns(shim) not in (ns1, sd.mnt_ns(1))
    # a's writable root is mounted in its shim's namespace (and seen as "/" by the container) and nowhere else
    assert {m.split()[0] for m in sd.mounts_mentioning("/containers/a/")} == {sd.mnt_ns(shim), sd.mnt_ns(init)}

    hold = sd.hold_mnt_ns(main1)
    try:
        sd.systemctl("restart", UNIT)
        main2 = sd.main_pid()
        assert sd.mnt_ns(main2) not in (ns1, sd.mnt_ns(1)), "every start gets a new mount namespace"
    finally:
        os.close(hold)
    assert sd.ok("exec", "a", "cat", "/file").out == "data\n"
    sd.ok("stop", "-t", "0", "a")
    assert sd.inspect("a")["status"] == "stopped"
    r = sd.ctl("rm", "a")
    assert r.rc == 0, r.err
    r = sd.ctl("rm", "-f", "b")
    assert r.rc == 0, r.err
    assert "busy" not in sd.journal().lower()
    assert sd.mounts_mentioning("/var/lib/shimd/containers") == []
    assert sd.ctl("ps", "-a", "-q").out == ""


def test_stop_leaves_containers_and_shims_running_and_start_finds_them(sd):
    pid, shim, main = _start_with_a_sleeper(sd)

    sd.systemctl("stop", UNIT)
    st = sd.show("ActiveState", "Result", "MainPID")
    assert st == {"ActiveState": "inactive", "Result": "success", "MainPID": "0"}
    assert not sd.alive(main)
    assert sd.alive(pid) and sd.alive(shim) and sd.cmdline(pid) == "sleep 100000"
    assert sd.processes("shimd-manager") == [] and sd.sh("test", "-e", "/run/shimd/shimd.pid", check=False).rc

    sd.start()
    assert STATUS.match(sd.prop("StatusText")).groups() == ("1", "1")
    ps = json.loads(sd.ok("ps", "--format", "json").out)
    assert [(c["id"], c["status"], c["pid"], c["shim_pid"]) for c in ps] == [("c", "running", pid, shim)]
    sd.ok("rm", "-f", "c")
    wait_for(lambda: not sd.alive(pid) and not sd.alive(shim), 10, "the container and its shim to go")


def test_watchdog_pings_keep_the_manager_alive_and_a_hung_one_is_restarted(sd):
    sd.dropin("watchdog", "[Service]\nWatchdogSec=2s\n")
    assert sd.prop("DropInPaths") == f"{DROPIN_DIR}/watchdog.conf"
    sd.start()
    assert sd.prop("WatchdogUSec") == "2s"
    main = sd.main_pid()
    env = sd.sh("cat", f"/proc/{main}/environ").out.split("\0")
    assert "WATCHDOG_USEC=2000000" in env

    # 7 s, more than three watchdog intervals: still the same process, and fresh pings all along (one a second)
    t_end = time.monotonic() + 7
    pings = set()
    while time.monotonic() < t_end:
        s = sd.show("ActiveState", "MainPID", "NRestarts", "WatchdogTimestampMonotonic")
        assert (s["ActiveState"], s["MainPID"], s["NRestarts"]) == ("active", str(main), "0"), s
        pings.add(int(s["WatchdogTimestampMonotonic"]))
        time.sleep(0.25)  # sampling a steady state over a period, not waiting for a condition
    assert len(pings) >= 5, f"only {len(pings)} distinct WATCHDOG=1 times seen in 7 s"

    # the control: a manager that stops pinging is killed by the watchdog and restarted
    sd.kill("STOP", main)
    wait_for(lambda: (s := sd.active())["MainPID"] not in ("0", str(main)) and s["ActiveState"] == "active",
             20, "the watchdog to restart a hung manager")
    assert "Watchdog timeout" in sd.journal()
    assert int(sd.prop("NRestarts")) == 1
