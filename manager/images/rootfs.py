"""A container's root filesystem read from disk as overlayfs shows it, never mounted here (the shim owns the mount:
docs/architecture.md, rule 1): its lower directories (image layers, the built-in busybox or a --rootfs tree) under
its writable upper directory, written as a tar.

Two views, one walker:
- merged (export): what the container sees. The top layer that has a name decides: a character device 0/0 is a
  whiteout (the name is absent), a directory is merged with the same directory of the layers below it until one
  is opaque (xattr trusted.overlay.opaque=y) or a layer has a non-directory there.
- diff (commit): the upper directory alone as an OCI layer: a whiteout becomes an empty `.wh.NAME`, an opaque
  directory gets a `.wh..wh..opq` entry.

Kept: owners, modes with setuid bits, mtimes, symlinks, device nodes, fifos, xattrs but overlay's own
(trusted.overlay.*), and hard links (files with one inode are written once, then as links to the first name).
Sockets are skipped, as docker does. A file that vanishes while it is read (a running container) is skipped.
"""

from __future__ import annotations

import errno
import os
import stat
import tarfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import BinaryIO

from .unpack import OPAQUE, WHITEOUT, XATTR_PREFIX

OVERLAY_XATTR = "trusted.overlay."
# what runc leaves in the upper directory as mount points of the files the shim bind-mounts (shimd/etcfiles.py, and
# --init's reaper at runtime.bundle.INIT_PATH): empty files, never the container's writes (those go to the
# bind-mounted files); not part of a commit
MOUNTPOINTS = frozenset({"etc/hostname", "etc/hosts", "etc/resolv.conf", "sbin/docker-init"})


def is_whiteout(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def _opaque(fd: int) -> bool:
    try:
        return os.getxattr(fd, "trusted.overlay.opaque") == b"y"
    except OSError:
        return False


@dataclass(frozen=True)
class Source:
    """An entry as found: its name in a directory we hold open. Nothing is looked up by a path the container
    could change meanwhile (a running container may swap a directory for a symlink to the host's /)."""

    dir_fd: int
    name: str

    @property
    def proc(self) -> str:
        """A path to the entry itself (the final name not followed by the calls given follow_symlinks=False)."""
        return f"/proc/self/fd/{self.dir_fd}/{self.name}"

    def lstat(self) -> os.stat_result | None:
        try:
            return os.stat(self.name, dir_fd=self.dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            return None

    def open(self, flags: int) -> int | None:
        """An fd of the entry, never through a symlink; None when it went or is no longer of that kind."""
        try:
            return os.open(self.name, flags | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, dir_fd=self.dir_fd)
        except OSError as e:
            if e.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
                return None
            raise


Entries = Iterator[tuple[str, Source, os.stat_result | None]]


@contextmanager
def _opened(dirs: list[str]) -> Iterator[list[int]]:
    fds = [os.open(d, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC) for d in dirs if os.path.isdir(d)]
    try:
        yield fds
    finally:
        for fd in fds:
            os.close(fd)


def merged(layers: list[str]) -> Entries:
    """(name in the container, where it is, its lstat) of every entry the overlay of layers (top first) shows,
    parents before children, names sorted. The root itself is not one (docker export has none either)."""
    with _opened(layers) as fds:
        yield from _merged_dir("", _until_opaque(fds))


def _until_opaque(chain: list[int]) -> list[int]:
    """A directory's layers, top first, cut after the first opaque one (it hides the ones below)."""
    for i, fd in enumerate(chain):
        if _opaque(fd):
            return chain[:i + 1]
    return chain


def _merged_dir(rel: str, chain: list[int]) -> Entries:
    for name in sorted({n for fd in chain for n in os.listdir(fd)}):
        top: tuple[Source, os.stat_result] | None = None
        below: list[Source] = []  # the directories merged under it
        for fd in chain:
            src = Source(fd, name)
            st = src.lstat()
            if st is None:
                continue  # a layer without this name lets the ones below show it
            if top is None:
                top = (src, st)
                if not stat.S_ISDIR(st.st_mode):
                    break
            elif stat.S_ISDIR(st.st_mode):
                below.append(src)
            else:
                break  # a file or whiteout below a directory: hidden, and so is everything under it
        if top is None or is_whiteout(top[1]):
            continue
        child = f"{rel}/{name}" if rel else name
        yield child, top[0], top[1]
        if stat.S_ISDIR(top[1].st_mode):
            subs = [fd for fd in (s.open(os.O_RDONLY | os.O_DIRECTORY) for s in (top[0], *below)) if fd is not None]
            try:
                yield from _merged_dir(child, _until_opaque(subs))
            finally:
                for fd in subs:
                    os.close(fd)


def diff(upper: str) -> Entries:
    """The upper directory as an OCI layer's entries: (name, where, lstat); lstat None marks a whiteout file
    (`.wh.NAME` or `.wh..wh..opq`) to write empty. The runtime's MOUNTPOINTS are left out."""
    def walk(rel: str, fd: int) -> Entries:
        for name in sorted(os.listdir(fd)):
            child, src = f"{rel}/{name}" if rel else name, Source(fd, name)
            st = src.lstat()
            if st is None or child in MOUNTPOINTS and stat.S_ISREG(st.st_mode) and st.st_size == 0:
                continue
            if is_whiteout(st):
                yield (f"{rel}/{WHITEOUT}{name}" if rel else WHITEOUT + name), src, None
                continue
            yield child, src, st
            sub = src.open(os.O_RDONLY | os.O_DIRECTORY) if stat.S_ISDIR(st.st_mode) else None
            if sub is not None:
                try:
                    if _opaque(sub):
                        yield f"{child}/{OPAQUE}", src, None
                    yield from walk(child, sub)
                finally:
                    os.close(sub)

    with _opened([upper]) as fds:
        for fd in fds:
            yield from walk("", fd)


class TarWriter:
    """Entries to a PAX tar stream, hard links found by inode."""

    def __init__(self, out: BinaryIO) -> None:
        self.tf = tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT)  # type: ignore[call-overload]
        self.links: dict[tuple[int, int], str] = {}

    def add(self, name: str, src: Source, st: os.stat_result | None) -> None:
        if st is None:  # a whiteout marker: an empty regular file
            self.tf.addfile(tarfile.TarInfo(name))
            return
        info = tarfile.TarInfo(name or ".")
        info.mode, info.uid, info.gid, info.mtime = stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, st.st_mtime
        mode, inode = st.st_mode, (st.st_dev, st.st_ino)
        if stat.S_ISREG(mode) and st.st_nlink > 1 and inode in self.links:
            info.type, info.linkname = tarfile.LNKTYPE, self.links[inode]
        elif stat.S_ISREG(mode):
            info.size = st.st_size
        elif stat.S_ISDIR(mode):
            info.type = tarfile.DIRTYPE
        elif stat.S_ISLNK(mode):
            info.type, info.linkname = tarfile.SYMTYPE, os.readlink(src.name, dir_fd=src.dir_fd)
        elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
            info.type = tarfile.CHRTYPE if stat.S_ISCHR(mode) else tarfile.BLKTYPE
            info.devmajor, info.devminor = os.major(st.st_rdev), os.minor(st.st_rdev)
        elif stat.S_ISFIFO(mode):
            info.type = tarfile.FIFOTYPE
        else:
            return  # a socket: nothing a tar can hold
        info.pax_headers = _xattrs(src.proc)
        if info.type != tarfile.REGTYPE or info.size == 0:
            self.tf.addfile(info)
        else:
            fd = src.open(os.O_RDONLY)
            if fd is None:
                return  # it went, or became a symlink, since it was listed (a running container)
            with open(fd, "rb") as f:
                now = os.fstat(fd)
                if not stat.S_ISREG(now.st_mode):
                    return
                info.size = now.st_size  # it may have changed since it was listed: take it as it is now
                self.tf.addfile(info, _Exactly(f, info.size))
        if info.type == tarfile.REGTYPE and st.st_nlink > 1:
            self.links[inode] = name

    def close(self) -> None:
        self.tf.close()


class _Exactly:
    """A file read as exactly size bytes (zeros after an end that came early): a tar member's size is fixed."""

    def __init__(self, f: BinaryIO, size: int) -> None:
        self.f, self.left = f, size

    def read(self, n: int = -1) -> bytes:
        n = self.left if n < 0 else min(n, self.left)
        data = self.f.read(n)
        data += b"\0" * (n - len(data))
        self.left -= n
        return data


def _xattrs(path: str) -> dict[str, str]:
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return {}
    out = {}
    for name in names:
        if name.startswith(OVERLAY_XATTR):
            continue
        try:
            value = os.getxattr(path, name, follow_symlinks=False)
        except OSError:
            continue
        out[XATTR_PREFIX + name] = value.decode("utf-8", "surrogateescape")
    return out


def write(entries: Entries, out: BinaryIO) -> None:
    w = TarWriter(out)
    for name, src, st in entries:
        w.add(name, src, st)
    w.close()
