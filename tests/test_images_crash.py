"""A manager SIGKILLed in the middle of an import, a commit or an image removal (manager/faults.py's IMAGE_POINTS):
on the next start no half image is listed, nothing it left is kept on disk, and the same operation then succeeds."""

from __future__ import annotations

import os
import shutil
import tempfile

import pytest

from manager.faults import IMAGE_POINTS
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


@pytest.mark.parametrize("point", IMAGE_POINTS)
def test_a_manager_killed_mid_transfer_or_removal_leaves_nothing_half_made(bare_env, archive, point):
    env = bare_env
    env.start_manager(env={"SHIMD_FAULTS": point})
    if point == "image:untagged":  # the import works; the removal dies
        env.ok("image", "import", "--tag", "local/img:1", archive)
        res = env.ctl("rmi", "local/img:1")
    elif point == "image:committed":  # a busybox container's commit dies before the index lists its image
        env.ok("run", "-d", "--name", env.name("c"), "busybox", "sh", "-c", "echo x > /x; sleep 1000")
        wait_for(lambda: env.ctl("exec", env.name("c"), "cat", "/x").rc == 0, 10, "the container's file")
        res = env.ctl("commit", env.name("c"), "local/committed:1")
    else:
        res = env.ctl("image", "import", "--tag", "local/img:1", archive)
    assert res.rc != 0, "the manager should have died at the fault point"
    assert env.proc is not None and env.proc.wait(15) == -9
    env.proc = None
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
