"""The container's volumes and tmpfs mounts: the manager's MountPlans made into OCI mounts (runc makes them inside
the container's mount namespace, resolving each destination within the root), and docker's first-use copy: a
named volume whose data directory is still empty gets the image's content at the mount's destination first."""

from __future__ import annotations

import os
import shutil

from runtime.bundle import BindMount, TmpfsMount
from shimproto.errors import InvalidArgument
from shimproto.plans import MountPlan


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
        out.append(BindMount(m.source, m.destination, m.readonly))
    return out
