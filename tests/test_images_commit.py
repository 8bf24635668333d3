"""export and commit with real components: a container of an image pulled from a docker-registry on 127.0.0.1,
exported as a tar compared with what the container sees, and committed, pushed, removed, pulled back and run."""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import tarfile
import tempfile

import pytest

from tests import imagekit
from tests.harness import PY, REPO, wait_for

pytestmark = pytest.mark.timeout(240)
# mount points inside the container: their attributes are the mounted thing's, not the tree's
MOUNTS = {"proc", "sys", "dev", "etc/hostname", "etc/hosts", "etc/resolv.conf"}
CHANGES = ("echo made > /data/made.txt; rm /data/kept.txt; rm -rf /data/dir; mkdir /data/dir; echo y > /data/dir/y; "
           "ln -s /data/made.txt /data/sym; mkfifo /data/fifo; touch /ready; exec sleep 1000")


@pytest.fixture(scope="module")
def reg():
    """The registry, holding test/app:1 (busybox plus /data, a deleted file, a replaced directory, a hard link and
    a setuid file)."""
    r = imagekit.Registry()
    work = tempfile.mkdtemp(prefix="shimd-imagebuild-")
    try:
        imagekit.app_image(work).push("app", f"{r.addr}/test/app:1")
        yield r
    finally:
        r.stop()
        subprocess.run(["rm", "-rf", work], check=False)


def changed_container(env, image: str, name: str) -> str:
    c = env.name(name)
    env.ok("run", "-d", "--name", c, "-u", "0", "--entrypoint", "sh", image, "-c", CHANGES)
    wait_for(lambda: env.ctl("exec", c, "cat", "/ready").rc == 0, 20, "the container's changes")
    return c


def seen_inside(env, c: str) -> dict[str, tuple[str, ...]]:
    """name -> (type, size, mode, uid, mtime) of every file the container sees on its root filesystem."""
    out = env.ok("exec", c, "sh", "-c", "find / -xdev ! -path / -exec stat -c '%n|%F|%s|%a|%u|%Y' {} +").out
    rows = (line.split("|") for line in out.splitlines())
    return {r[0].lstrip("/"): tuple(r[1:]) for r in rows}


def kind(m: tarfile.TarInfo) -> str:
    return {tarfile.DIRTYPE: "directory", tarfile.SYMTYPE: "symbolic link", tarfile.FIFOTYPE: "fifo"}.get(
        m.type, "regular file")


def test_export_gives_the_files_the_container_sees(env, reg):
    app = f"{reg.addr}/test/app:1"
    env.ok("pull", "--tls-verify=false", app, timeout=120)
    c = changed_container(env, app, "x")
    inside = seen_inside(env, c)
    out = os.path.join(env.base, "x.tar")
    env.ok("export", "-o", out, c)
    with tarfile.open(out) as tf:
        members = {m.name: m for m in tf}
        data = {n: tf.extractfile(m).read() for n, m in members.items() if m.isreg()}  # type: ignore[union-attr]
    assert set(members) == set(inside)
    for name, (typ, size, mode, uid, mtime) in inside.items():
        m = members[name]
        if name in MOUNTS or name.startswith(("proc/", "sys/", "dev/")):
            continue
        assert typ.startswith(kind(m).split()[0]), (name, typ, m.type)
        assert (oct(m.mode)[2:], m.uid, int(m.mtime)) == (mode, int(uid), int(mtime)), name
        if m.isreg():
            assert m.size == int(size), name
    assert data["data/made.txt"] == b"made\n" and members["data/sym"].linkname == "/data/made.txt"
    assert not {"data/kept.txt", "data/gone.txt", "data/dir/old.txt"} & set(members)  # whiteouts and opaque dirs
    link = members["data/suid"]  # one inode: stored once, then as a link
    assert link.islnk() and link.linkname == "data/hardlink" and members["data/hardlink"].mode == 0o4755
    busybox = env.ok("exec", c, "/usr/bin/md5sum", "/bin/busybox").out.split()[0]
    assert hashlib.md5(data["bin/busybox"]).hexdigest() == busybox
    # to standard output when it is not a terminal: the same archive
    p = subprocess.run([PY, "-m", "shimctl", "--address", env.sock, "export", c], capture_output=True, cwd=REPO,
                       timeout=60, stdin=subprocess.DEVNULL)
    assert p.returncode == 0, p.stderr
    with tarfile.open(fileobj=io.BytesIO(p.stdout)) as tf:
        assert tf.getnames() == list(members)
    res = env.ctl("export", "-o", out + ".2", "no-such-container")
    assert res.rc == 1 and "no such container" in res.err and len(res.err.splitlines()) == 1
    assert not os.path.exists(out + ".2") and not [n for n in os.listdir(env.base) if "shimctl-tmp" in n]
    res = env.ctl("export", "-o", "/nonexistent-dir/x.tar", c)
    assert res.rc == 1 and "no such directory" in res.err and len(res.err.splitlines()) == 1


def test_a_committed_container_pushed_removed_and_pulled_back_runs_with_its_changes(env, reg):
    app, new = f"{reg.addr}/test/app:1", f"{reg.addr}/test/committed:1"
    env.ok("pull", "--tls-verify=false", app, timeout=120)
    c = changed_container(env, app, "y")
    image_id = env.ok("commit", "-m", "my changes", c, new, timeout=120).out.strip()
    assert image_id.startswith("sha256:")
    assert env.inspect(c)["status"] == "running"  # paused while read, then thawed
    img = env.ok("image", "inspect", new).json()[0]
    base = env.ok("image", "inspect", app).json()[0]
    assert img["layers"][:-1] == base["layers"] and len(img["layers"]) == len(base["layers"]) + 1
    assert img["config"]["history"][-1]["comment"] == "my changes"
    assert img["config"]["config"]["Entrypoint"] == ["/bin/echo"]  # the image's config, kept
    env.ok("push", "--tls-verify=false", new, timeout=120)
    env.ok("rmi", new)
    assert env.ctl("image", "inspect", new).rc == 1
    env.ok("pull", "--tls-verify=false", new, timeout=120)
    assert env.ok("image", "inspect", new).json()[0]["id"] == image_id  # the same config: the same image
    out = env.ok("run", "--rm", "-u", "0", "--entrypoint", "sh", new, "-c",
                 "cat /data/made.txt /data/dir/y; ls /data /data/dir; test -p /data/fifo && echo fifo; "
                 "readlink /data/sym; cat /etc/hostname").out.split("\n")
    assert out[:2] == ["made", "y"]
    listing = set(out[2:-4])
    assert {"made.txt", "sym", "fifo", "suid", "hardlink", "dir"} <= listing
    assert not {"kept.txt", "gone.txt", "old.txt"} & listing  # deleted in the container: absent in the image
    assert out[-4:-1] == ["fifo", "/data/made.txt", out[-2]] and out[-2]  # its own hostname, not the committed one


def test_commit_of_a_busybox_container_makes_a_base_layer_and_bad_input_is_refused(env, reg):
    c = env.name("b")
    env.ok("run", "-d", "--name", c, "busybox", "sh", "-c", "echo hello > /greeting; rm /bin/ls; sleep 1000")
    wait_for(lambda: env.ctl("exec", c, "cat", "/greeting").rc == 0, 20, "the greeting")
    env.ok("commit", "--pause=false", c, "local/greeting:1", timeout=120)
    img = env.ok("image", "inspect", "local/greeting:1").json()[0]
    assert len(img["layers"]) == 2 and img["config"]["config"]["Cmd"] == ["sh"]
    assert env.ok("run", "--rm", "local/greeting:1", "cat", "/greeting").out == "hello\n"
    res = env.ctl("run", "--rm", "local/greeting:1", "ls")
    assert res.rc == 127, res  # deleted in the container that was committed
    for args, words in ((["no-such", "x/y:1"], "no such container"), ([c, "Bad//Ref"], "invalid reference")):
        res = env.ctl("commit", *args)
        assert res.rc == 1 and words in res.err.lower() and len(res.err.splitlines()) == 1, res.err
    assert len(env.ok("images", "-q").out.split()) == 1  # nothing half made by the refusals
