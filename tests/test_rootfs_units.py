"""A root filesystem read from disk as overlayfs shows it (manager/images/rootfs.py), without mounting: the merged
view export writes (whiteouts, opaque directories, a file over a directory, a layer without a name), the upper
directory as a layer (commit) unpacked back to the same tree, and a running container swapping a file or a
directory for a symlink to the host while it is read (nothing of the host is read)."""

from __future__ import annotations

import io
import os
import shutil
import stat
import tarfile

import pytest

from manager.images import rootfs, unpack

pytestmark = pytest.mark.timeout(60)


def tree(base: str, files: dict[str, str | None], opaque: tuple[str, ...] = ()) -> str:
    """files: name -> text (a file), "/" ending name -> a directory, None -> an overlay whiteout."""
    os.makedirs(base)
    for name, text in files.items():
        path = os.path.join(base, name)
        os.makedirs(os.path.dirname(path.rstrip("/")), exist_ok=True)
        if name.endswith("/"):
            os.makedirs(path, exist_ok=True)
        elif text is None:
            os.mknod(path, stat.S_IFCHR | 0o600, os.makedev(0, 0))
        else:
            with open(path, "w") as f:
                f.write(text)
    for d in opaque:
        os.setxattr(os.path.join(base, d), "trusted.overlay.opaque", b"y")
    return base


def as_tar(entries: rootfs.Entries) -> dict[str, bytes | str]:
    out = io.BytesIO()
    rootfs.write(entries, out)
    out.seek(0)
    with tarfile.open(fileobj=out) as tf:
        return {m.name: tf.extractfile(m).read() if m.isreg() else m.type.decode() for m in tf}  # type: ignore


def test_the_merged_view_is_what_overlay_shows(tmp_path):
    tmp = str(tmp_path)
    base = tree(f"{tmp}/l0", {"a/old": "0", "a/keep": "0", "b/inner": "0", "c": "0", "d/x": "0", "e": "0",
                              "f/deep": "0"})
    mid = tree(f"{tmp}/l1", {"a/new": "1", "b": "file over dir", "d/": "", "gone": "1", "f/": ""}, opaque=("d",))
    upper = tree(f"{tmp}/up", {"a/old": None, "c/": "", "e": None, "gone": None, "top": "2"})
    got = as_tar(rootfs.merged([upper, f"{tmp}/no-such-layer", mid, base]))
    assert got == {"a": "5", "a/keep": b"0", "a/new": b"1", "b": b"file over dir", "c": "5", "d": "5",
                   "f": "5", "f/deep": b"0", "top": b"2"}


def test_the_upper_directory_as_a_layer_unpacks_to_the_same_whiteouts(tmp_path):
    tmp = str(tmp_path)
    upper = tree(f"{tmp}/up", {"etc/hostname": "", "etc/app.conf": "x", "gone": None, "dir/new": "n",
                               "dir/sub/": ""}, opaque=("dir",))
    os.symlink("/etc/shadow", f"{upper}/link")  # an absolute symlink: written as it is, never followed
    os.link(f"{upper}/etc/app.conf", f"{upper}/hard")
    layer = f"{tmp}/layer.tar"
    with open(layer, "wb") as f:
        rootfs.write(rootfs.diff(upper), f)
    with tarfile.open(layer) as tf:
        names = tf.getnames()
        assert tf.getmember("link").linkname == "/etc/shadow"
        assert tf.getmember("hard").islnk() != tf.getmember("etc/app.conf").islnk()
    assert "etc/hostname" not in names  # the runtime's empty mount point
    assert ".wh.gone" in names and "dir/.wh..wh..opq" in names
    os.mkdir(f"{tmp}/out")
    unpack.unpack(layer, f"{tmp}/out")
    assert rootfs.is_whiteout(os.lstat(f"{tmp}/out/gone"))
    assert os.getxattr(f"{tmp}/out/dir", "trusted.overlay.opaque") == b"y"
    assert os.path.samefile(f"{tmp}/out/hard", f"{tmp}/out/etc/app.conf")
    assert open(f"{tmp}/out/dir/new").read() == "n"


def test_an_entry_swapped_for_a_symlink_while_it_is_read_reads_nothing_of_the_host(tmp_path):
    tmp = str(tmp_path)
    secret = f"{tmp}/host-secret"
    with open(secret, "w") as f:
        f.write("host data")
    os.makedirs(f"{tmp}/host-dir")
    with open(f"{tmp}/host-dir/inner", "w") as f:
        f.write("host data")
    upper = tree(f"{tmp}/up", {"file": "mine!!!!!", "dir/inner": "mine"})
    out = io.BytesIO()
    w = rootfs.TarWriter(out)
    entries = rootfs.diff(upper)
    for name, src, st in entries:
        if name == "dir":  # listed as a directory, then made a symlink to the host's before it is opened
            shutil.rmtree(f"{upper}/dir")
            os.symlink(f"{tmp}/host-dir", f"{upper}/dir")
        if name == "file":  # listed as a file, then made a symlink to the host's before it is read
            assert st is not None and stat.S_ISREG(st.st_mode)
            os.unlink(f"{upper}/file")
            os.symlink(secret, f"{upper}/file")
        w.add(name, src, st)
    w.close()
    assert b"host data" not in out.getvalue()
