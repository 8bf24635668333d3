"""The container's volumes and tmpfs mounts: the manager's MountPlans made into OCI mounts (runc makes them inside
the container's mount namespace, resolving each destination within the root), and docker's first-use copy: a
named volume whose data directory is still empty gets the image's content at the mount's destination first.

A bind with shared propagation needs its source's mount to be shared, or the container's copy has no peer to share
with (containerd refuses such a source, kubelet makes its directories shared): the shim makes the mount holding the
source shared in its own mount namespace. That namespace is a slave of the host's (shimd/sys.py), so mounts the
container makes there reach the shim's namespace and every container sharing that source, not the host; the host's
reach the container both with shared and with slave propagation."""

from __future__ import annotations

import os
import shutil

from runtime.bundle import BindMount, TmpfsMount
from shimproto.errors import InvalidArgument
from shimproto.plans import MountPlan

from . import sys as _sys

MOUNTINFO = "/proc/self/mountinfo"


def mount_point(path: str, mountinfo: str = MOUNTINFO) -> str:
    """The mount point of the mount holding path (the longest mount point that is path or above it; the last
    mounted of equal ones, which hides the others)."""
    real, best = os.path.realpath(path), "/"
    for point, _ in _sys.mount_points(mountinfo):
        if (real == point or real.startswith(point.rstrip("/") + "/")) and len(point) >= len(best):
            best = point
    return best


def _inside(rootfs: str, dest: str) -> str | None:
    """rootfs + dest with every link resolved, when that stays inside rootfs (else None: nothing to copy)."""
    root = os.path.realpath(rootfs)
    real = os.path.realpath(os.path.join(root, dest.lstrip("/")))
    return real if real == root or real.startswith(root + os.sep) else None


def copy_up(rootfs: str, dest: str, data_dir: str) -> bool:
    """Copy the image's tree at dest (seen through the container's root, already mounted) into an empty volume
    data dir, keeping links, modes and owners; the directory's own mode and owner too. True when it copied."""
    if os.listdir(data_dir):
        return False
    src = _inside(rootfs, dest)
    if src is None or not os.path.isdir(src):
        return False
    shutil.copytree(src, data_dir, symlinks=True, dirs_exist_ok=True, copy_function=shutil.copy2)
    for dirpath, dirs, files in os.walk(data_dir):
        for name in dirs + files:
            p = os.path.join(dirpath, name)
            st = os.lstat(os.path.join(src, os.path.relpath(p, data_dir)))
            os.lchown(p, st.st_uid, st.st_gid)
    st = os.stat(src)
    os.chown(data_dir, st.st_uid, st.st_gid)
    os.chmod(data_dir, st.st_mode & 0o7777)
    return True


def oci_mounts(rootfs: str, plans: list[MountPlan]) -> list[BindMount | TmpfsMount]:
    out: list[BindMount | TmpfsMount] = []
    for m in plans:
        if m.kind == "tmpfs":
            out.append(TmpfsMount(m.destination, m.options))
            continue
        if not os.path.exists(m.source):
            raise InvalidArgument(f"volume source {m.source} does not exist")
        if m.copy_up:
            copy_up(rootfs, m.destination, m.source)
        if m.propagation in ("shared", "rshared"):
            _sys.make_shared(mount_point(m.source))
        out.append(BindMount(m.source, m.destination, m.readonly, m.propagation))
    return out
