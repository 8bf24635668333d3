"""A manager SIGKILLed in the middle of an import, a commit or an image removal (manager/faults.py's IMAGE_POINTS):
on the next start no half image is listed, nothing it left is kept on disk, and the same operation then succeeds;
a container a commit paused runs again (one the user paused stays paused)."""

from __future__ import annotations

import os
import shutil
import tempfile

import pytest

from manager.faults import IMAGE_POINTS
from shimproto.client import Client
from shimproto.errors import ShimdError
from tests import imagekit
from tests.harness import wait_for

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def archive():
    work = tempfile.mkdtemp(prefix="shimd-imagecrash-")
    try:
        lay = imagekit.Layout(work)
        lay.layer("base", imagekit.busybox_tree)
        lay.layer("del", imagekit.delete_a_file)
        path = os.path.join(work, "img.tar")
        imagekit.run("skopeo", "copy", f"oci:{lay.dir}:del", f"oci-archive:{path}:del")
        yield path
    finally:
        shutil.rmtree(work, ignore_errors=True)


def on_disk(env) -> dict[str, list[str]]:
    images = os.path.join(env.root, "images")
    return {d: sorted(os.listdir(os.path.join(images, *d.split("/")))) for d in
            ("blobs/sha256", "layers/sha256", "ingest")}


@pytest.mark.parametrize("point", [p for p in IMAGE_POINTS if p != "commit:paused"])
def test_a_manager_killed_mid_transfer_or_removal_leaves_nothing_half_made(bare_env, archive, point):
    env = bare_env
    env.start_manager(env={"SHIMD_FAULTS": point})
    if point == "image:untagged":  # the import works; the removal dies
        env.ok("image", "import", "--tag", "local/img:1", archive)
        rc = env.ctl_killing_the_manager("rmi", "local/img:1")
    elif point == "image:committed":  # a busybox container's commit dies before the index lists its image
        env.ok("run", "-d", "--name", env.name("c"), "busybox", "sh", "-c", "echo x > /x; sleep 1000")
        wait_for(lambda: env.ctl("exec", env.name("c"), "cat", "/x").rc == 0, 10, "the container's file")
        rc = env.ctl_killing_the_manager("commit", env.name("c"), "local/committed:1")
    else:
        rc = env.ctl_killing_the_manager("image", "import", "--tag", "local/img:1", archive)
    assert rc == -9, "the manager should have died at the fault point"
    env.start_manager()
    # collected at start, in the background, before any image command opens the store
    empty = {"blobs/sha256": [], "layers/sha256": [], "ingest": []}
    wait_for(lambda: on_disk(env) == empty, 10, "the image store's garbage collected at start")
    assert env.ok("images", "-q").out == ""  # nothing half made is listed
    if point == "image:committed":  # thawed before the store is written, it lived on; the same commit now works
        assert env.inspect(env.name("c"))["status"] == "running"
        env.ok("commit", env.name("c"), "local/committed:1")
        assert env.ok("run", "--rm", "local/committed:1", "cat", "/x").out == "x\n"
        return
    env.ok("image", "import", "--tag", "local/img:1", archive)
    assert env.ok("run", "--rm", "local/img:1", "ls", "/data").out == "dir\nkept.txt\n"


def _events(env, id: str) -> list[str]:
    c = Client(env.sock, timeout=30)
    try:
        evs = c.call("events", {"since": 0, "timeout": 0})["events"]  # type: ignore[index]
    finally:
        c.close()
    return [ev["type"] for ev in evs if ev["id"] == id and ev["type"] in ("paused", "resumed")]


def test_a_container_a_killed_commit_paused_runs_again_and_the_same_commit_then_works(bare_env):
    env = bare_env
    env.start_manager(env={"SHIMD_FAULTS": "commit:paused"})
    c, u = env.name("c"), env.name("u")
    env.ok("run", "-d", "--name", c, "busybox", "sh", "-c", "echo x > /x; sleep 1000")
    env.ok("run", "-d", "--name", u, "busybox", "sleep", "1000")
    env.ok("pause", u)
    wait_for(lambda: env.ctl("exec", c, "cat", "/x").rc == 0, 10, "the container's file")
    params = {"id": c, "ref": "local/committed:1", "key": "commit-of-c"}
    client = Client(env.sock, timeout=30)
    try:
        with pytest.raises(ShimdError):  # the manager dies between the pause and the resume
            client.call("commit", params, timeout=30)
    finally:
        client.close()
    assert env.proc is not None and env.proc.wait(15) == -9
    env.proc = None
    assert open(os.path.join(env.state, "intents", c)).read().startswith("commit commit-of-c.")
    # a commit intent for the container the user paused, as if a commit had been about to pause it: its pause
    # fails now (the container is not running), so restore leaves it paused
    with open(os.path.join(env.state, "intents", u), "w") as f:
        f.write("commit never-sent.0123abcd")
    env.start_manager()
    assert env.inspect(c)["status"] == "running"
    assert env.inspect(u)["status"] == "paused"
    assert os.listdir(os.path.join(env.state, "intents")) == []
    assert _events(env, c) == ["paused", "resumed"]
    empty = {"blobs/sha256": [], "layers/sha256": [], "ingest": []}
    wait_for(lambda: on_disk(env) == empty, 10, "the image store's garbage collected at start")
    assert env.ok("images", "-q").out == ""
    client = Client(env.sock, timeout=60)  # the same call again: the container is paused anew, then resumed
    try:
        view = client.call("commit", params, timeout=60)
    finally:
        client.close()
    assert view["tags"] == ["local/committed:1"]  # type: ignore[index]
    assert _events(env, c) == ["paused", "resumed", "paused", "resumed"]
    assert env.inspect(c)["status"] == "running"
    assert env.ok("run", "--rm", "local/committed:1", "cat", "/x").out == "x\n"
    env.ok("unpause", u)
