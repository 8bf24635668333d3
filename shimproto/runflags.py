"""docker run's process, security and resource flags as typed values: parsed once from their docker text (the CLI
parses them for an early error, the manager and the shim again from what any client sent). Each error is one
InvalidArgument naming the flag and the text.

    --ulimit NAME=SOFT[:HARD]               Ulimit (-1: unlimited)
    --device HOST[:CONTAINER][:rwm]         DeviceSpec
    --sysctl KEY=VALUE                      check_sysctl: the namespaced ones docker allows
    --cap-add/--cap-drop CAP|ALL            capabilities(): the set the container gets
    --security-opt no-new-privileges[:true|false], seccomp=unconfined, seccomp=PROFILE-JSON   security_opts()
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from .errors import InvalidArgument
from .plans import HOST, clean_path

RLIM_INFINITY = 2**64 - 1  # what the OCI spec (uint64) takes for "unlimited"

# docker's --ulimit names (go-units) -> the kernel's resource names the OCI spec takes
ULIMITS = {n: f"RLIMIT_{n.upper()}" for n in (
    "core", "cpu", "data", "fsize", "locks", "memlock", "msgqueue", "nice", "nofile", "nproc", "rss", "rtprio",
    "rttime", "sigpending", "stack")} | {"as": "RLIMIT_AS"}

# every capability up to CAP_CHECKPOINT_RESTORE (40), in the kernel's order
ALL_CAPS = tuple(f"CAP_{n}" for n in (
    "CHOWN DAC_OVERRIDE DAC_READ_SEARCH FOWNER FSETID KILL SETGID SETUID SETPCAP LINUX_IMMUTABLE NET_BIND_SERVICE "
    "NET_BROADCAST NET_ADMIN NET_RAW IPC_LOCK IPC_OWNER SYS_MODULE SYS_RAWIO SYS_CHROOT SYS_PTRACE SYS_PACCT "
    "SYS_ADMIN SYS_BOOT SYS_NICE SYS_RESOURCE SYS_TIME SYS_TTY_CONFIG MKNOD LEASE AUDIT_WRITE AUDIT_CONTROL SETFCAP "
    "MAC_OVERRIDE MAC_ADMIN SYSLOG WAKE_ALARM BLOCK_SUSPEND AUDIT_READ PERFMON BPF CHECKPOINT_RESTORE").split())

# the sysctls docker lets a container set: they belong to one of its own namespaces (ipc, or its network's)
IPC_SYSCTLS = ("kernel.msgmax", "kernel.msgmnb", "kernel.msgmni", "kernel.sem", "kernel.shmall", "kernel.shmmax",
               "kernel.shmmni", "kernel.shm_rmid_forced")
SYSCTL_KEY = re.compile(r"[a-z0-9_]+(\.[A-Za-z0-9_-]+)+")


@dataclass(frozen=True)
class Ulimit:
    name: str  # docker's name (nofile)
    soft: int
    hard: int

    @property
    def resource(self) -> str:
        return ULIMITS[self.name]

    @classmethod
    def parse(cls, text: str) -> Ulimit:
        name, sep, values = text.partition("=")
        if not sep or name not in ULIMITS:
            raise InvalidArgument(f"invalid --ulimit {text!r}: use NAME=SOFT[:HARD] with NAME one of "
                                  f"{', '.join(sorted(ULIMITS))}")
        soft_text, _, hard_text = values.partition(":")
        soft, hard = (_limit(t, text) for t in (soft_text, hard_text or soft_text))
        if soft > hard:
            raise InvalidArgument(f"invalid --ulimit {text!r}: the soft limit is above the hard one")
        return cls(name, soft, hard)


def _limit(t: str, text: str) -> int:
    if t == "-1":
        return RLIM_INFINITY
    if not t.isdigit() or int(t) >= RLIM_INFINITY:
        raise InvalidArgument(f"invalid --ulimit {text!r}: {t!r} is not a number (or -1 for unlimited)")
    return int(t)


@dataclass(frozen=True)
class DeviceSpec:
    host: str
    container: str
    access: str = "rwm"

    @classmethod
    def parse(cls, text: str) -> DeviceSpec:
        parts = text.split(":")
        if len(parts) > 3 or not parts[0]:
            raise InvalidArgument(f"invalid --device {text!r}: use HOST[:CONTAINER][:PERMISSIONS]")
        access = "rwm"
        if len(parts) > 1 and not parts[-1].startswith("/"):
            access = parts.pop()
            if not access or not re.fullmatch(r"r?w?m?", access):
                raise InvalidArgument(f"invalid --device {text!r}: permissions are a combination of r, w and m")
        if len(parts) > 2:
            raise InvalidArgument(f"invalid --device {text!r}: use HOST[:CONTAINER][:PERMISSIONS]")
        host = clean_path(parts[0], "--device host path")
        return cls(host, clean_path(parts[1], "--device container path") if len(parts) == 2 else host, access)


def check_sysctl(key: str, value: str, network: str, ipc: str = "") -> None:
    """docker's rules: net.* belong to the container's network namespace (its own, or the one it joins with
    container:ID, its pod's), so not with the host's; the ipc ones to its ipc namespace, so not with ipc=host."""
    if not SYSCTL_KEY.fullmatch(key) or "\n" in value or not value:
        raise InvalidArgument(f"invalid --sysctl {key}={value!r}: use KEY=VALUE")
    if key.startswith("net."):
        if network == HOST:
            raise InvalidArgument(f"--sysctl {key} is not allowed with --network {network}: the container has no "
                                  f"network namespace of its own")
    elif key in IPC_SYSCTLS or key.startswith("fs.mqueue."):
        if ipc == HOST:
            raise InvalidArgument(f"--sysctl {key} is not allowed with ipc host: the container has no ipc "
                                  f"namespace of its own")
    else:
        raise InvalidArgument(f"--sysctl {key} is not allowed: only net.*, fs.mqueue.* and the ipc ones "
                              f"({', '.join(IPC_SYSCTLS)}) belong to the container")


def cap_name(text: str) -> str:
    """net_admin, NET_ADMIN, CAP_NET_ADMIN -> CAP_NET_ADMIN; ALL stays ALL."""
    name = text.strip().upper()
    if name == "ALL":
        return name
    name = name if name.startswith("CAP_") else f"CAP_{name}"
    if name not in ALL_CAPS:
        raise InvalidArgument(f"unknown capability {text!r}")
    return name


def capabilities(add: list[str], drop: list[str], default: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """docker's rule (--privileged aside: it gets every one): the default set, or every capability when ALL is
    added, or none when ALL is dropped; then the named ones added and dropped."""
    adds, drops = [cap_name(c) for c in add], [cap_name(c) for c in drop]
    caps = set(ALL_CAPS if "ALL" in adds else () if "ALL" in drops else default)
    caps |= {c for c in adds if c != "ALL"}
    caps -= {c for c in drops if c != "ALL"}
    return tuple(c for c in ALL_CAPS if c in caps)


SECCOMP_MAX = 256 * 1024  # a profile's JSON: containers-common's is 16 KiB
UNCONFINED = "unconfined"


@dataclass(frozen=True)
class SecurityOpts:
    no_new_privileges: bool = False
    seccomp: str = ""  # "": the default profile; "unconfined"; else a profile's JSON text (the CLI read the file)


def security_opts(opts: list[str]) -> SecurityOpts:
    """--security-opt as docker takes it: no-new-privileges (alone, :true/false or =true/false), seccomp=unconfined,
    seccomp=JSON (docker's CLI, like ours, reads seccomp=PATH and sends the file's text). The profile is checked
    here as JSON that is an object; its rules when the shim converts it (runtime/seccomp.py)."""
    nnp, seccomp = False, ""
    for opt in opts:
        key, _, value = opt.partition("=") if opt.startswith("seccomp=") else opt.replace("=", ":", 1).partition(":")
        if key == "no-new-privileges" and value in ("", "true", "false"):
            nnp = value != "false"
        elif key == "seccomp" and value == UNCONFINED:
            seccomp = value
        elif key == "seccomp" and value.lstrip().startswith("{"):
            if len(value) > SECCOMP_MAX:
                raise InvalidArgument(f"--security-opt seccomp: the profile is over {SECCOMP_MAX // 1024} KiB")
            try:
                if not isinstance(json.loads(value), dict):
                    raise ValueError("not a JSON object")
            except ValueError as e:
                raise InvalidArgument(f"--security-opt seccomp: the profile is not a JSON object: {e}") from None
            seccomp = value
        else:
            raise InvalidArgument(f"invalid --security-opt {opt[:80]!r}: the options are "
                                  f"no-new-privileges[:true|false], seccomp=unconfined and seccomp=PROFILE.json")
    return SecurityOpts(nnp, seccomp)


def no_new_privileges(opts: list[str]) -> bool:
    return security_opts(opts).no_new_privileges
