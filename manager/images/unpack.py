"""One image layer (a tar stream, gzip or plain) unpacked into a directory of its own, as overlayfs reads a lower
layer, and safe against a hostile archive.

Paths: tarfile.data_filter's rules are the base (refuse absolute names, `..`, and links that leave the directory)
and they are applied by our own extractor, entry by entry, since data_filter also strips what a root filesystem
needs (setuid bits, device nodes, absolute symlinks, which point inside the container's root, not the host's). On
top of it, nothing is ever written through a symlink: a parent that is a symlink is refused, an entry replacing a
path removes it first and files are opened with O_NOFOLLOW|O_EXCL. Kept: owners, modes with setuid/setgid/sticky,
hard links (inside the layer), symlinks, device nodes and fifos, xattrs (except trusted.overlay.*, which only we
write), mtimes (directories' last, after their entries).
OCI whiteouts become overlayfs ones: `.wh.NAME` -> a character device 0/0 named NAME, `.wh..wh..opq` -> the
xattr trusted.overlay.opaque=y on its directory.
The uncompressed stream is hashed as it is read: its sha256 is the layer's diffid, checked by the caller.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import stat
import tarfile
from typing import BinaryIO

from shimproto.errors import InvalidArgument

WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"
XATTR_PREFIX = "SCHILY.xattr."
GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


class UnsafeLayer(InvalidArgument):
    """The layer names something outside its directory, or an entry we will not make."""


class HashingReader:
    """A read-only stream that hashes every byte read through it (and the rest, on finish())."""

    def __init__(self, f: BinaryIO) -> None:
        self.f = f
        self.sha = hashlib.sha256()
        self.size = 0

    def read(self, n: int = -1) -> bytes:
        data = self.f.read(n)
        self.sha.update(data)
        self.size += len(data)
        return data

    def finish(self) -> str:
        while self.read(1 << 20):
            pass
        return "sha256:" + self.sha.hexdigest()


def _clean(name: str, what: str) -> str:
    """A member name as a relative path inside the layer; UnsafeLayer for an absolute one or one with `..`."""
    if name.startswith("/") or "\0" in name:
        raise UnsafeLayer(f"layer entry {name!r}: {what} is an absolute path")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UnsafeLayer(f"layer entry {name!r}: {what} leads out of the layer with '..'")
    return "/".join(parts)


class Unpacker:
    def __init__(self, dest: str) -> None:
        self.dest = dest
        self.dirs: list[tuple[str, tarfile.TarInfo]] = []

    def _parent(self, rel: str) -> str:
        """The entry's parent directory in dest, made when missing; never through a symlink."""
        path = self.dest
        for part in rel.split("/")[:-1]:
            path = os.path.join(path, part)
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                os.mkdir(path, 0o755)
                continue
            if stat.S_ISLNK(st.st_mode):
                raise UnsafeLayer(f"layer entry {rel!r}: would write through the symlink {part!r}")
            if not stat.S_ISDIR(st.st_mode):
                raise UnsafeLayer(f"layer entry {rel!r}: {part!r} is not a directory")
        return path

    @staticmethod
    def _clear(path: str, keep_dir: bool = False) -> None:
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return
        if stat.S_ISDIR(st.st_mode):
            if not keep_dir:
                shutil.rmtree(path)
        else:
            os.unlink(path)

    def entry(self, m: tarfile.TarInfo, tf: tarfile.TarFile) -> None:
        rel = _clean(m.name, "its name")
        if m.isreg() or m.isdir() or m.islnk():  # data_filter's own checks where it does not strip what we keep
            try:
                tarfile.data_filter(m, self.dest)
            except tarfile.FilterError as e:
                raise UnsafeLayer(f"layer entry {m.name!r}: {e}") from None
        if not rel:
            self.dirs.append((self.dest, m))  # "./": the layer's root directory itself
            return
        parent = self._parent(rel)
        base = rel.rsplit("/", 1)[-1]
        if base == OPAQUE:
            os.setxattr(parent, "trusted.overlay.opaque", b"y", follow_symlinks=False)
            return
        if base.startswith(WHITEOUT):
            target = os.path.join(parent, base[len(WHITEOUT):])
            self._clear(target)
            os.mknod(target, 0o600 | stat.S_IFCHR, os.makedev(0, 0))
            return
        path = os.path.join(parent, base)
        if m.isdir():
            self._clear(path, keep_dir=True)
            if not os.path.isdir(path):
                os.mkdir(path, 0o700)
            self.dirs.append((path, m))
            return
        self._clear(path)
        if m.isreg():
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "wb") as out:
                src = tf.extractfile(m)
                assert src is not None
                shutil.copyfileobj(src, out, 1 << 20)
        elif m.issym():
            os.symlink(m.linkname, path)
        elif m.islnk():
            src_rel = _clean(m.linkname, "its hard link target")
            src = os.path.join(self._parent(src_rel), src_rel.rsplit("/", 1)[-1])
            if not os.path.lexists(src) or os.path.isdir(src) and not os.path.islink(src):
                raise UnsafeLayer(f"layer entry {rel!r}: hard link to {m.linkname!r}, which is not a file of "
                                  f"this layer")
            os.link(src, path, follow_symlinks=False)
            return  # the link shares its target's inode: owner, mode and times are the target's
        elif m.ischr() or m.isblk() or m.isfifo():
            kind = stat.S_IFCHR if m.ischr() else stat.S_IFBLK if m.isblk() else stat.S_IFIFO
            os.mknod(path, 0o600 | kind, os.makedev(m.devmajor, m.devminor) if not m.isfifo() else 0)
        else:
            raise UnsafeLayer(f"layer entry {rel!r}: unsupported type {m.type!r}")
        self._attrs(path, m)

    def _attrs(self, path: str, m: tarfile.TarInfo) -> None:
        os.chown(path, m.uid, m.gid, follow_symlinks=False)
        for key, value in m.pax_headers.items():
            if key.startswith(XATTR_PREFIX):
                name = key[len(XATTR_PREFIX):]
                if name.startswith("trusted.overlay."):
                    raise UnsafeLayer(f"layer entry {m.name!r}: carries the overlay's own xattr {name}")
                os.setxattr(path, name, value.encode("utf-8", "surrogateescape"), follow_symlinks=False)
        if not m.issym():
            os.chmod(path, stat.S_IMODE(m.mode))  # after chown, which clears setuid
        os.utime(path, ns=(int(m.mtime * 1e9),) * 2, follow_symlinks=False)

    def finish(self) -> None:
        for path, m in reversed(self.dirs):  # deepest last written: parents' mtimes are set after their children
            self._attrs(path, m)


def _decompressed(f: BinaryIO) -> BinaryIO:
    head = f.read(4)
    f.seek(0)
    if head[:2] == GZIP_MAGIC:
        return gzip.GzipFile(fileobj=f, mode="rb")  # type: ignore[return-value]
    if head == ZSTD_MAGIC:
        raise InvalidArgument("zstd-compressed layers are not supported (this Python has no zstd)")
    return f


def unpack(blob: str, dest: str) -> str:
    """Unpack the layer blob (gzip or plain tar) into dest (an empty directory); its diffid (sha256 of the tar)."""
    with open(blob, "rb") as raw:
        reader = HashingReader(_decompressed(raw))
        u = Unpacker(dest)
        try:
            with tarfile.open(fileobj=reader, mode="r|") as tf:  # type: ignore[call-overload]
                for m in tf:
                    u.entry(m, tf)
        except (tarfile.TarError, EOFError, gzip.BadGzipFile) as e:
            raise InvalidArgument(f"layer {os.path.basename(blob)}: not a readable tar stream: {e}") from e
        u.finish()
        return reader.finish()
