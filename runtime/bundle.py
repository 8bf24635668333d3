"""OCI bundle building: a runtime-spec 1.0 config.json for a Linux container, written atomically."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

DEFAULT_ENV = ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "TERM=xterm"]

# Docker's default capability set: what a container that is not --privileged gets.
DEFAULT_CAPS = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW", "CAP_SETGID",
    "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL",
    "CAP_AUDIT_WRITE",
)
# docker's open-files limit for a container: what containerd's LimitNOFILE=infinity gives its shims (2^20 on a host
# whose fs.nr_open is the kernel's default), soft and hard; a host that allows fewer (Spec.nr_open) gets that
DEFAULT_NOFILE = 1048576
DEFAULT_SHM_SIZE = 64 * 1024 * 1024
CPU_PERIOD = 100000  # µs: docker's --cpus is a quota of this period
INIT_PATH = "/sbin/docker-init"  # where --init's reaper is bind-mounted, as docker does

MASKED = [
    "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list",
    "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware",
]
READONLY = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]


@dataclass(frozen=True)
class BindMount:
    """A host file or directory bind-mounted into the container (e.g. /etc/hostname); propagation as mount(8)
    names it ([r]private, [r]shared, [r]slave), rprivate unless given."""

    source: str
    destination: str
    readonly: bool = False
    propagation: str = ""

    def to_oci(self) -> dict:
        return {"destination": self.destination, "type": "bind", "source": self.source,
                "options": ["rbind", self.propagation or "rprivate", "ro" if self.readonly else "rw"]}


def rootfs_propagation(binds: list) -> str:
    """A mount's shared or slave propagation only works under a root that has it too (runc makes the root
    rslave by default, which turns a shared bind into a slave one): rshared when any bind is shared, rslave when
    any is slave, else "" (runc's default), as containerd and docker decide it."""
    props = {getattr(b, "propagation", "") for b in binds}
    return "rshared" if props & {"shared", "rshared"} else "rslave" if props & {"slave", "rslave"} else ""


@dataclass(frozen=True)
class TmpfsMount:
    """A tmpfs of the container's own (docker's --tmpfs): nosuid and nodev unless options say otherwise."""

    destination: str
    options: tuple[str, ...] = ()

    def to_oci(self) -> dict:
        return {"destination": self.destination, "type": "tmpfs", "source": "tmpfs",
                "options": ["nosuid", "nodev", *self.options]}


@dataclass(frozen=True)
class Rlimit:
    type: str  # RLIMIT_NOFILE ...
    soft: int
    hard: int

    def to_oci(self) -> dict:
        return {"type": self.type, "soft": self.soft, "hard": self.hard}


@dataclass(frozen=True)
class Device:
    """A device node made in the container (--device), and the device cgroup rule that lets it be used."""

    path: str  # in the container
    type: str  # c | b
    major: int
    minor: int
    file_mode: int = 0o666
    uid: int = 0
    gid: int = 0
    access: str = "rwm"

    def to_oci(self) -> dict:
        return {"path": self.path, "type": self.type, "major": self.major, "minor": self.minor,
                "fileMode": self.file_mode, "uid": self.uid, "gid": self.gid}

    def rule(self) -> dict:
        return {"allow": True, "type": self.type, "major": self.major, "minor": self.minor, "access": self.access}


@dataclass(frozen=True)
class Resources:
    """The cgroup limits (None: not set). memory_swap is memory + swap (-1: unlimited); unset with a memory limit
    it is that limit (no swap). nano_cpus is docker's --cpus times 1e9: a CFS quota of CPU_PERIOD."""

    memory: int | None = None
    memory_swap: int | None = None
    pids: int | None = None
    nano_cpus: int | None = None
    cpu_shares: int | None = None

    def to_oci(self, devices: list[Device], all_devices: bool) -> dict:
        out: dict = {"devices": [{"allow": all_devices, "access": "rwm"}, *(d.rule() for d in devices)]}
        if self.memory is not None:
            out["memory"] = {"limit": self.memory,
                             "swap": self.memory if self.memory_swap is None else self.memory_swap}
        if self.pids is not None:
            out["pids"] = {"limit": self.pids}
        cpu = {**({"quota": self.nano_cpus * CPU_PERIOD // 10**9, "period": CPU_PERIOD} if self.nano_cpus else {}),
               **({"shares": self.cpu_shares} if self.cpu_shares else {})}
        if cpu:
            out["cpu"] = cpu
        return out


@dataclass(frozen=True)
class Security:
    """What the process may do: its capabilities (bounding, effective, permitted), no_new_privileges, and
    privileged (every device usable, /sys and the cgroup tree writable, nothing of /proc masked), and the
    `linux.seccomp` filter (runtime/seccomp.py; None: unconfined)."""

    capabilities: tuple[str, ...] = DEFAULT_CAPS
    no_new_privileges: bool = False
    privileged: bool = False
    seccomp: dict | None = None


def rlimits(ulimits: list[Rlimit], nr_open: int) -> list[dict]:
    """The process's rlimits: the given ones, plus docker's open-files default when none names it."""
    out = [u.to_oci() for u in ulimits]
    if not any(u.type == "RLIMIT_NOFILE" for u in ulimits):
        n = min(DEFAULT_NOFILE, nr_open)
        out.append({"type": "RLIMIT_NOFILE", "hard": n, "soft": n})
    return out


def with_init(args: list[str]) -> list[str]:
    """--init: the reaper runs the command as its child."""
    return [INIT_PATH, "--", *args]


@dataclass
class Spec:
    args: list[str]
    hostname: str
    cgroups_path: str
    env: list[str] = field(default_factory=lambda: list(DEFAULT_ENV))
    cwd: str = "/"
    terminal: bool = False
    rootfs: str = "rootfs"
    readonly_rootfs: bool = False
    resources: Resources = field(default_factory=Resources)
    security: Security = field(default_factory=Security)
    rlimits: list[Rlimit] = field(default_factory=list)  # docker's open-files default added unless named
    nr_open: int = DEFAULT_NOFILE  # the most open files the host lets the container have
    devices: list[Device] = field(default_factory=list)
    sysctls: dict[str, str] = field(default_factory=dict)
    shm_size: int = DEFAULT_SHM_SIZE
    binds: list[BindMount | TmpfsMount] = field(default_factory=list)  # after the standard mounts, in this order
    netns: str | None = ""  # "": a new network namespace; None: the host's; a path: join that one
    ipc: str | None = ""  # the same for the ipc, pid and uts namespaces
    pid: str | None = ""
    uts: str | None = ""  # not a new one: no hostname is set (runc sets none outside a uts namespace of its own)
    user: dict | None = None  # {uid, gid, additionalGids?}; None: root
    masked_paths: list[str] | None = None  # None: MASKED (none when privileged)
    readonly_paths: list[str] | None = None  # None: READONLY (none when privileged)
    oom_score_adj: int | None = None

    def _namespaces(self) -> list[dict]:
        out: list[dict] = []
        for kind, value in (("pid", self.pid), ("network", self.netns), ("ipc", self.ipc), ("uts", self.uts)):
            if value is not None:
                out.append({"type": kind, "path": value} if value else {"type": kind})
        return out + [{"type": "mount"}]

    def _mounts(self) -> list[dict]:
        rw = "rw" if self.security.privileged else "ro"
        return [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
             "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
             "options": ["nosuid", "noexec", "nodev", "mode=1777", f"size={self.shm_size // 1024}k"]},
            {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
             "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", rw]},
            {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
             "options": ["nosuid", "noexec", "nodev", "relatime", rw]},
            *(b.to_oci() for b in self.binds),
        ]

    def to_oci(self) -> dict:
        sec = self.security
        linux: dict = {
            "cgroupsPath": self.cgroups_path,
            "resources": self.resources.to_oci(self.devices, all_devices=sec.privileged),
            "namespaces": self._namespaces(),
            "maskedPaths": list(self.masked_paths) if self.masked_paths is not None else
            [] if sec.privileged else MASKED,
            "readonlyPaths": list(self.readonly_paths) if self.readonly_paths is not None else
            [] if sec.privileged else READONLY,
        }
        propagation = rootfs_propagation(self.binds)
        if propagation:
            linux["rootfsPropagation"] = propagation
        if self.devices:
            linux["devices"] = [d.to_oci() for d in self.devices]
        if self.sysctls:
            linux["sysctl"] = dict(self.sysctls)
        if sec.seccomp is not None:
            linux["seccomp"] = sec.seccomp
        out = {
            "ociVersion": "1.0.2",
            "process": {
                "terminal": self.terminal,
                "user": self.user or {"uid": 0, "gid": 0},
                "args": self.args,
                "env": self.env,
                "cwd": self.cwd,
                "capabilities": {k: list(sec.capabilities) for k in ("bounding", "effective", "permitted")},
                "rlimits": rlimits(self.rlimits, self.nr_open),
                "noNewPrivileges": sec.no_new_privileges,
            },
            "root": {"path": self.rootfs, "readonly": self.readonly_rootfs},
            "mounts": self._mounts(),
            "linux": linux,
        }
        if self.uts == "":
            out["hostname"] = self.hostname
        if self.oom_score_adj is not None:
            out["process"]["oomScoreAdj"] = self.oom_score_adj
        return out


def write_bundle(bundle_dir: str, spec: Spec) -> str:
    """Write <bundle>/config.json atomically (temp file, rename) and return its path, owner-only (it holds every
    -e value). Not fsynced: the bundle lives in the state dir (a tmpfs in production) and is written again by
    every create. Compact, by json's C encoder: with indent json.dump takes the pure-Python one (1.0 ms against
    0.18 for a container's spec with its seccomp filter)."""
    os.makedirs(bundle_dir, mode=0o700, exist_ok=True)
    path = os.path.join(bundle_dir, "config.json")
    tmp = path + ".tmp"
    with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600), "w") as f:
        f.write(json.dumps(spec.to_oci(), separators=(",", ":")))
    os.rename(tmp, path)
    return path


def merge_env(base: list[str], extra: list[str]) -> list[str]:
    """base with each K=V of extra replacing base's K (in place) or added at the end: docker's exec -e."""
    out = list(base)
    index = {e.split("=", 1)[0]: n for n, e in enumerate(out)}
    for e in extra:
        key = e.split("=", 1)[0]
        if key in index:
            out[index[key]] = e
        else:
            index[key] = len(out)
            out.append(e)
    return out


def exec_process(base: dict, args: list[str], env: list[str] | None, cwd: str | None, terminal: bool,
                 user: dict | None = None) -> dict:
    """An OCI process for `runc exec --process`: the container's own process spec with a new command; env is
    merged into the container's, user ({uid, gid, additionalGids?}) replaces the container's."""
    proc = json.loads(json.dumps(base))  # deep copy
    proc["args"] = args
    proc["terminal"] = terminal
    if env:
        proc["env"] = merge_env(proc.get("env") or [], env)
    if cwd:
        proc["cwd"] = cwd
    if user is not None:
        proc["user"] = dict(user)
    proc.pop("consoleSize", None)
    return proc
