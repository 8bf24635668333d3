"""Built-in images. `busybox` is a root filesystem made once from the host's busybox-static, so a new user runs a
container with no registry. Image trees are shared and read-only: every container gets an overlay on top."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile

from shimproto.errors import InvalidArgument, NotFound

BUSYBOX_CANDIDATES = ("/bin/busybox", "/usr/bin/busybox")
BUILTIN = ("busybox",)

PASSWD = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
GROUP = "root:x:0:\ntty:x:5:\nnogroup:x:65534:\n"


def _busybox_binary() -> str:
    for p in BUSYBOX_CANDIDATES:
        if os.path.isfile(p):
            return p
    raise NotFound("image busybox needs the host's busybox-static (apt-get install busybox-static)")


def _build_busybox(dest: str) -> None:
    """Build the tree in a temp dir next to dest, then rename: never a half-built image."""
    parent = os.path.dirname(dest)
    os.makedirs(parent, mode=0o711, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".busybox-", dir=parent)
    try:
        os.chmod(tmp, 0o755)
        for d in ("bin", "sbin", "usr/bin", "usr/sbin", "etc", "proc", "sys", "dev", "tmp", "root", "var/tmp",
                  "run"):
            os.makedirs(os.path.join(tmp, d), exist_ok=True)
        os.chmod(os.path.join(tmp, "tmp"), 0o1777)
        shutil.copy2(_busybox_binary(), os.path.join(tmp, "bin", "busybox"))
        applets = subprocess.run([os.path.join(tmp, "bin", "busybox"), "--list-full"], check=True,
                                 capture_output=True, text=True).stdout.split()
        for path in applets:
            link = os.path.join(tmp, path)
            if os.path.lexists(link) or path == "bin/busybox":
                continue
            os.makedirs(os.path.dirname(link), exist_ok=True)
            os.symlink(os.path.relpath(os.path.join(tmp, "bin", "busybox"), os.path.dirname(link)), link)
        for name, text in (("passwd", PASSWD), ("group", GROUP),
                           ("resolv.conf", ""), ("hosts", "127.0.0.1 localhost\n")):
            with open(os.path.join(tmp, "etc", name), "w") as f:
                f.write(text)
        os.rename(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def resolve(root: str, image: str) -> str:
    """The read-only tree of a built-in image, built on first use."""
    if image not in BUILTIN:
        raise NotFound(f"no such image {image!r} (built in: {', '.join(BUILTIN)}; or use --rootfs DIR)")
    dest = os.path.join(root, "images", image, "rootfs")
    if not os.path.isdir(dest):
        try:
            _build_busybox(dest)
        except OSError as e:
            if not os.path.isdir(dest):  # another request built it meanwhile: fine
                raise InvalidArgument(f"cannot build image {image}: {e}") from e
    return dest
