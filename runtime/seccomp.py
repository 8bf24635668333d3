"""Seccomp profiles: docker's and podman's profile form (containers-common's /usr/share/containers/seccomp.json) made
the OCI runtime-spec `linux.seccomp` of one container, for this machine's architecture, the container's
capabilities and this kernel. Pure functions; a profile that is not well formed is one ValueError naming the field.

The profile form has an `archMap` (native architecture -> its sub-architectures) and rules with `includes` and
`excludes` on `arches` (Go's names: amd64, arm64 ...), `caps` and `minKernel`. A rule is kept when every included
capability is held, the machine's arch is among the included ones (when any are named) and the kernel is at least
minKernel; and when no excluded capability is held and the arch is not excluded. That is moby's rule.

containers-common's profile allows unshare, clone's namespace flags and clone3 to everyone (rootless podman runs
itself in containers); docker's profile does not, and a user namespace gives a container every capability in it
(tmpfs mounts, veth pairs, the kernel's less-trodden code). Without CAP_SYS_ADMIN we apply docker's rules to those
three calls on top of the file's: no_namespaces().
"""

from __future__ import annotations

import os
import re

DEFAULT_PROFILE = "/usr/share/containers/seccomp.json"

# uname's machine -> (libseccomp's architecture, Go's name as profiles' includes/excludes use it)
ARCHES = {
    "x86_64": ("SCMP_ARCH_X86_64", "amd64"), "aarch64": ("SCMP_ARCH_AARCH64", "arm64"),
    "s390x": ("SCMP_ARCH_S390X", "s390x"), "ppc64le": ("SCMP_ARCH_PPC64LE", "ppc64le"),
    "riscv64": ("SCMP_ARCH_RISCV64", "riscv64"), "armv7l": ("SCMP_ARCH_ARM", "arm"), "i686": ("SCMP_ARCH_X86", "386"),
}
ACTIONS = {"SCMP_ACT_KILL", "SCMP_ACT_KILL_PROCESS", "SCMP_ACT_KILL_THREAD", "SCMP_ACT_TRAP", "SCMP_ACT_ERRNO",
           "SCMP_ACT_TRACE", "SCMP_ACT_ALLOW", "SCMP_ACT_LOG", "SCMP_ACT_NOTIFY"}
OPS = {"SCMP_CMP_NE", "SCMP_CMP_LT", "SCMP_CMP_LE", "SCMP_CMP_EQ", "SCMP_CMP_GE", "SCMP_CMP_GT",
       "SCMP_CMP_MASKED_EQ"}
FLAGS = {"SECCOMP_FILTER_FLAG_TSYNC", "SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_SPEC_ALLOW"}
# CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNET
CLONE_NAMESPACES = 0x7E020000
EPERM, ENOSYS = 1, 38
NAME = re.compile(r"[a-z0-9_]{1,64}")
MAX_RULES = 4096


def machine() -> tuple[str, str, tuple[int, int]]:
    """(uname's machine, libseccomp's architecture, the kernel's major.minor) of this host."""
    u = os.uname()
    m = re.match(r"(\d+)\.(\d+)", u.release)
    return u.machine, ARCHES.get(u.machine, ("", ""))[0], (int(m[1]), int(m[2])) if m else (0, 0)


def _kernel(text: object, where: str) -> tuple[int, int]:
    m = re.fullmatch(r"(\d+)\.(\d+)", text) if isinstance(text, str) else None
    if not m:
        raise ValueError(f"{where}: minKernel {text!r} is not MAJOR.MINOR")
    return int(m[1]), int(m[2])


def _strlist(raw: dict, key: str, where: str) -> list[str]:
    v = raw.get(key) or []
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise ValueError(f"{where}: {key} must be a list of strings")
    return v


def _int(raw: dict, key: str, where: str, lo: int = 0, hi: int = 2**64 - 1) -> int:
    v = raw.get(key, 0)
    if type(v) is not int or not lo <= v <= hi:
        raise ValueError(f"{where}: {key} must be an integer from {lo} to {hi}")
    return v


def _args(raw: object, where: str) -> list[dict]:
    if raw is None:
        return []
    if not isinstance(raw, list) or len(raw) > 6:
        raise ValueError(f"{where}: args must be a list of at most 6 conditions")
    out = []
    for a in raw:
        if not isinstance(a, dict) or a.get("op") not in OPS:
            raise ValueError(f"{where}: each of args needs an op, one of {', '.join(sorted(OPS))}")
        out.append({"index": _int(a, "index", where, 0, 5), "value": _int(a, "value", where),
                    "valueTwo": _int(a, "valueTwo", where), "op": a["op"]})
    return out


def _action(raw: dict, key: str, where: str) -> str:
    if raw.get(key) not in ACTIONS:
        raise ValueError(f"{where}: {key} must be one of {', '.join(sorted(ACTIONS))}")
    return raw[key]


def _applies(rule: dict, goarch: str, caps: set[str], kernel: tuple[int, int], where: str) -> bool:
    inc, exc = rule.get("includes") or {}, rule.get("excludes") or {}
    if not isinstance(inc, dict) or not isinstance(exc, dict):
        raise ValueError(f"{where}: includes and excludes must be maps")
    if inc.get("minKernel") and kernel < _kernel(inc["minKernel"], where):
        return False
    if exc.get("minKernel") and kernel >= _kernel(exc["minKernel"], where):
        return False
    arches = _strlist(inc, "arches", where)
    return (not arches or goarch in arches) and set(_strlist(inc, "caps", where)) <= caps and \
        goarch not in _strlist(exc, "arches", where) and not caps & set(_strlist(exc, "caps", where))


def to_oci(profile: object, machine_name: str, caps: tuple[str, ...] | list[str], kernel: tuple[int, int]) -> dict:
    """profile (the profile form, or already the OCI one) as the `linux.seccomp` of a container holding caps."""
    if not isinstance(profile, dict):
        raise ValueError("seccomp profile: not a JSON object")
    scmp_arch, goarch = ARCHES.get(machine_name, ("", ""))
    out: dict = {"defaultAction": _action(profile, "defaultAction", "seccomp profile")}
    if "defaultErrnoRet" in profile:
        out["defaultErrnoRet"] = _int(profile, "defaultErrnoRet", "seccomp profile", 0, 4095)
    arches = _strlist(profile, "architectures", "seccomp profile")
    arch_map = profile.get("archMap") or []
    if not isinstance(arch_map, list) or not all(isinstance(a, dict) for a in arch_map):
        raise ValueError("seccomp profile: archMap must be a list of maps")
    for a in arch_map:
        if a.get("architecture") == scmp_arch:
            arches = [scmp_arch, *_strlist(a, "subArchitectures", "seccomp profile: archMap")]
    if arches:
        out["architectures"] = arches
    flags = _strlist(profile, "flags", "seccomp profile")
    if set(flags) - FLAGS:
        raise ValueError(f"seccomp profile: flags must be among {', '.join(sorted(FLAGS))}")
    if flags:
        out["flags"] = flags
    rules = profile.get("syscalls") or []
    if not isinstance(rules, list) or len(rules) > MAX_RULES:
        raise ValueError(f"seccomp profile: syscalls must be a list of at most {MAX_RULES} rules")
    held, syscalls = set(caps), []
    for n, rule in enumerate(rules):
        where = f"seccomp profile: syscalls[{n}]"
        if not isinstance(rule, dict):
            raise ValueError(f"{where}: not a map")
        names = [rule["name"]] if isinstance(rule.get("name"), str) else _strlist(rule, "names", where)
        if not names or not all(NAME.fullmatch(x) for x in names):
            raise ValueError(f"{where}: names must be syscall names")
        action, args = _action(rule, "action", where), _args(rule.get("args"), where)
        if not _applies(rule, goarch, held, kernel, where):
            continue
        r: dict = {"names": names, "action": action}
        if args:
            r["args"] = args
        if "errnoRet" in rule:
            r["errnoRet"] = _int(rule, "errnoRet", where, 0, 4095)
        syscalls.append(r)
    out["syscalls"] = syscalls if "CAP_SYS_ADMIN" in held else no_namespaces(syscalls, goarch)
    return out


def no_namespaces(syscalls: list[dict], goarch: str) -> list[dict]:
    """docker's rules for a container without CAP_SYS_ADMIN: unshare refused (EPERM), clone allowed only without a
    namespace flag, clone3 ENOSYS (its flags are in memory, out of seccomp's reach; libc then falls back to clone)."""
    gone = {"unshare", "clone", "clone3"}
    out = []
    for r in syscalls:
        if r["action"] == "SCMP_ACT_ALLOW" and not r.get("args") and gone & set(r["names"]):
            kept = [n for n in r["names"] if n not in gone]
            if kept:
                out.append({**r, "names": kept})
            continue
        out.append(r)
    flags_arg = 1 if goarch in ("s390", "s390x") else 0  # s390's clone takes the stack first
    return [*out,
            {"names": ["clone"], "action": "SCMP_ACT_ALLOW",
             "args": [{"index": flags_arg, "value": CLONE_NAMESPACES, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}]},
            {"names": ["unshare"], "action": "SCMP_ACT_ERRNO", "errnoRet": EPERM},
            {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": ENOSYS}]
