"""The OCI spec of one container, from its create request: the flags' typed values (shimproto.runflags) joined with
what only the host can say (device numbers, the capabilities and open-files ceiling of this kernel, the user in
the container's own /etc/passwd); runtime/bundle.py renders it."""

from __future__ import annotations

import json
import os
import resource
import stat

from runtime import seccomp
from runtime.bundle import (
    DEFAULT_CAPS,
    DEFAULT_ENV,
    DEFAULT_NOFILE,
    DEFAULT_SHM_SIZE,
    BindMount,
    Device,
    Resources,
    Rlimit,
    Security,
    Spec,
    TmpfsMount,
    with_init,
)
from shimproto import runflags
from shimproto.errors import InvalidArgument
from shimproto.spec import ContainerSpec, ShimCreate

from .users import resolve_user, with_groups

NR_OPEN = "/proc/sys/fs/nr_open"
OWN_OOM_SCORE_ADJ = "/proc/self/oom_score_adj"
# what --privileged leaves out of the host's /dev: the container has its own of these
PRIVATE_DEV = ("pts", "shm", "mqueue", "console", "ptmx", "fd", "stdin", "stdout", "stderr", "core")


def _read_int(path: str, default: int) -> int:
    try:
        with open(path) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return default


def device(host: str, path: str, access: str = "rwm") -> Device:
    """The device node at host (links followed), made at path in the container."""
    try:
        st = os.stat(host)
    except OSError as e:
        raise InvalidArgument(f"--device {host}: {e.strerror}") from None
    if not (stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode)):
        raise InvalidArgument(f"--device {host} is not a device")
    return Device(path, "c" if stat.S_ISCHR(st.st_mode) else "b", os.major(st.st_rdev), os.minor(st.st_rdev),
                  stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, access)


def host_devices(dev: str = "/dev") -> list[Device]:
    """Every device node of the host's /dev (--privileged, as docker), the container's own ones left out."""
    out = []
    for dirpath, dirs, files in os.walk(dev):
        if dirpath == dev:
            dirs[:] = [d for d in dirs if d not in PRIVATE_DEV]
        for name in files:
            p = os.path.join(dirpath, name)
            if dirpath == dev and name in PRIVATE_DEV or os.path.islink(p):
                continue
            try:
                out.append(device(p, p))
            except InvalidArgument:
                continue
    return out


def held_caps() -> tuple[str, ...]:
    """The capabilities this shim holds (runc, its child, can give no other): --privileged gets these."""
    with open("/proc/self/status") as f:
        mask = int(next(line.split()[1] for line in f if line.startswith("CapEff:")), 16)
    return tuple(c for n, c in enumerate(runflags.ALL_CAPS) if mask >> n & 1)


def nofile_ceiling(caps: tuple[str, ...]) -> tuple[int, str]:
    """The most open files a container may be given here, and why: the kernel's fs.nr_open, or this shim's own
    hard limit when it may not raise it (no CAP_SYS_RESOURCE: some sandboxes)."""
    nr_open = _read_int(NR_OPEN, DEFAULT_NOFILE)
    if "CAP_SYS_RESOURCE" in caps:
        return nr_open, "fs.nr_open"
    return min(nr_open, resource.getrlimit(resource.RLIMIT_NOFILE)[1]), "the shim's own hard limit"


def ulimits(texts: list[str], ceiling: tuple[int, str]) -> list[Rlimit]:
    out = []
    for text in texts:
        u = runflags.Ulimit.parse(text)
        if u.name == "nofile" and u.hard > ceiling[0]:
            raise InvalidArgument(f"--ulimit {text}: at most {ceiling[0]} open files here ({ceiling[1]})")
        out.append(Rlimit(u.resource, u.soft, u.hard))
    return out


_default_profile: tuple[tuple[int, int], object] | None = None  # ((mtime_ns, size), parsed): read once per change


def default_profile(path: str = seccomp.DEFAULT_PROFILE) -> object:
    global _default_profile
    try:
        st = os.stat(path)
        if _default_profile is None or _default_profile[0] != (st.st_mtime_ns, st.st_size):
            with open(path) as f:
                _default_profile = ((st.st_mtime_ns, st.st_size), json.load(f))
    except OSError as e:
        raise InvalidArgument(f"the default seccomp profile {path}: {e.strerror} (install containers-common, or "
                              f"run with --security-opt seccomp=unconfined)") from None
    except ValueError as e:
        raise InvalidArgument(f"the default seccomp profile {path}: {e}") from None
    return _default_profile[1]


def seccomp_filter(privileged: bool, opt: str, caps: tuple[str, ...]) -> dict | None:
    """The container's `linux.seccomp`: none when --privileged or seccomp=unconfined (as docker), else the given
    profile or containers-common's, for this machine and caps."""
    if privileged or opt == runflags.UNCONFINED:
        return None
    name, _, kernel = seccomp.machine()
    try:
        return seccomp.to_oci(json.loads(opt) if opt else default_profile(), name, caps, kernel)
    except ValueError as e:
        raise InvalidArgument(f"--security-opt seccomp: {e}" if opt else f"{seccomp.DEFAULT_PROFILE}: {e}") from None


def oom_score_adj(requested: int | None, caps: tuple[str, ...], own: str = OWN_OOM_SCORE_ADJ) -> int | None:
    """The container's process.oomScoreAdj: as requested, but never below this shim's own value when the shim
    lacks CAP_SYS_RESOURCE: runc (our child, with our value) may raise its score but not lower it without that
    capability, and would fail the create ("nsexec: failed to update /proc/self/oom_score_adj: Permission
    denied"). A kubelet asks for -998 for guaranteed pods; on such a host they get the shim's own value."""
    if requested is None or "CAP_SYS_RESOURCE" in caps:
        return requested
    return max(requested, _read_int(own, requested))


def namespace(value: str) -> str | None:
    """A NamespacePlan value as the OCI spec takes it: "" new, "host" -> None (none of its own), else a path."""
    return None if value == "host" else value


def process_user(rootfs: str, spec: ContainerSpec) -> dict | None:
    """The OCI process user: --user resolved, plus group_add; None (root, no extra group) when neither is given."""
    if not spec.user and not spec.group_add:
        return None
    return with_groups(rootfs, resolve_user(rootfs, spec.user or "0"), spec.group_add)


def build(id: str, req: ShimCreate, rootfs: str, binds: list[BindMount | TmpfsMount], netns: str | None) -> Spec:
    """The spec of req's container, whose root is mounted at rootfs; binds after the standard mounts."""
    spec = req.spec
    held = held_caps()
    ceiling = nofile_ceiling(held)
    caps = held if spec.privileged else runflags.capabilities(spec.cap_add, spec.cap_drop, DEFAULT_CAPS)
    if "ALL" in spec.cap_add:  # every capability this host can give: one runc was never given would fail create
        caps = tuple(c for c in caps if c in held)
    devices = host_devices() if spec.privileged else []
    opts = runflags.security_opts(spec.security_opt)
    for text in spec.devices:
        d = runflags.DeviceSpec.parse(text)
        devices.append(device(d.host, d.container, d.access))
    return Spec(
        args=with_init(spec.args) if spec.init else spec.args, env=spec.env or list(DEFAULT_ENV),
        cwd=spec.cwd or "/", hostname=req.namespaces.hostname or spec.hostname or id,
        cgroups_path=req.cgroups_path or f"/shimd/{id}",
        terminal=spec.tty, binds=binds, netns=netns, readonly_rootfs=spec.read_only,
        user=process_user(rootfs, spec), ipc=namespace(req.namespaces.ipc), pid=namespace(req.namespaces.pid),
        uts=namespace(req.namespaces.uts), masked_paths=spec.masked_paths, readonly_paths=spec.readonly_paths,
        oom_score_adj=oom_score_adj(spec.oom_score_adj, held),
        resources=Resources(memory=spec.memory_limit, memory_swap=spec.memory_swap, pids=spec.pids_limit,
                            nano_cpus=spec.nano_cpus, cpu_shares=spec.cpu_shares),
        security=Security(capabilities=tuple(caps), privileged=spec.privileged,
                          no_new_privileges=opts.no_new_privileges,
                          seccomp=seccomp_filter(spec.privileged, opts.seccomp, tuple(caps))),
        rlimits=ulimits(spec.ulimits, ceiling), nr_open=ceiling[0], devices=devices, sysctls=dict(spec.sysctls),
        shm_size=spec.shm_size or DEFAULT_SHM_SIZE,
    )
