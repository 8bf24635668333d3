"""OCI bundle building: a runtime-spec 1.0 config.json for a Linux container, written atomically."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

DEFAULT_ENV = ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "TERM=xterm"]

# Docker's default capability set: what a container that is not --privileged gets.
DEFAULT_CAPS = [
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW", "CAP_SETGID",
    "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL",
    "CAP_AUDIT_WRITE",
]

MASKED = [
    "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list",
    "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware",
]
READONLY = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]


@dataclass(frozen=True)
class BindMount:
    """A host file or directory bind-mounted into the container (e.g. /etc/hostname)."""

    source: str
    destination: str
    readonly: bool = False

    def to_oci(self) -> dict:
        return {"destination": self.destination, "type": "bind", "source": self.source,
                "options": ["rbind", "rprivate", "ro" if self.readonly else "rw"]}


@dataclass(frozen=True)
class TmpfsMount:
    """A tmpfs of the container's own (docker's --tmpfs): nosuid and nodev unless options say otherwise."""

    destination: str
    options: tuple[str, ...] = ()

    def to_oci(self) -> dict:
        return {"destination": self.destination, "type": "tmpfs", "source": "tmpfs",
                "options": ["nosuid", "nodev", *self.options]}


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
    memory_limit: int | None = None
    pids_limit: int | None = None
    binds: list[BindMount | TmpfsMount] = field(default_factory=list)  # after the standard mounts, in this order
    netns: str | None = ""  # "": a new network namespace; None: the host's; a path: join that one
    user: dict | None = None  # {uid, gid, additionalGids?}; None: root

    def _namespaces(self) -> list[dict]:
        out: list[dict] = [{"type": t} for t in ("pid", "ipc", "uts", "mount")]
        if self.netns is not None:
            out.insert(1, {"type": "network", "path": self.netns} if self.netns else {"type": "network"})
        return out

    def to_oci(self) -> dict:
        resources: dict = {"devices": [{"allow": False, "access": "rwm"}]}
        if self.memory_limit is not None:
            resources["memory"] = {"limit": self.memory_limit, "swap": self.memory_limit}
        if self.pids_limit is not None:
            resources["pids"] = {"limit": self.pids_limit}
        return {
            "ociVersion": "1.0.2",
            "process": {
                "terminal": self.terminal,
                "user": self.user or {"uid": 0, "gid": 0},
                "args": self.args,
                "env": self.env,
                "cwd": self.cwd,
                "capabilities": {k: DEFAULT_CAPS for k in ("bounding", "effective", "permitted")},
                "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
                "noNewPrivileges": True,
            },
            "root": {"path": self.rootfs, "readonly": self.readonly_rootfs},
            "hostname": self.hostname,
            "mounts": [
                {"destination": "/proc", "type": "proc", "source": "proc"},
                {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
                 "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
                {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
                 "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
                {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
                 "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
                {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
                 "options": ["nosuid", "noexec", "nodev"]},
                {"destination": "/sys", "type": "sysfs", "source": "sysfs",
                 "options": ["nosuid", "noexec", "nodev", "ro"]},
                {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
                 "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]},
                *(b.to_oci() for b in self.binds),
            ],
            "linux": {
                "cgroupsPath": self.cgroups_path,
                "resources": resources,
                "namespaces": self._namespaces(),
                "maskedPaths": MASKED,
                "readonlyPaths": READONLY,
            },
        }


def write_bundle(bundle_dir: str, spec: Spec) -> str:
    """Write <bundle>/config.json atomically (temp file, rename) and return its path. Not fsynced: the bundle
    lives in the state dir (a tmpfs in production) and is written again by every create."""
    os.makedirs(bundle_dir, mode=0o711, exist_ok=True)
    path = os.path.join(bundle_dir, "config.json")
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(spec.to_oci(), f, indent=1)
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
