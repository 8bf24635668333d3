"""Images end to end with real components: a docker-registry on 127.0.0.1, images built here with umoci and pushed
with skopeo, pulled by the manager, run through runc on an overlay of their layers."""

from __future__ import annotations

import json
import os
import pty
import shutil
import subprocess
import tempfile

import pytest

from tests import imagekit
from tests.harness import PY, REPO

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def reg():
    """The registry, holding test/app:1 (4 layers, with a config), test/base:1 (its first layer) and test/other:1
    (that base plus one layer of its own). Yields (registry, the OCI layout the images were built in)."""
    r = imagekit.Registry()
    work = tempfile.mkdtemp(prefix="shimd-imagebuild-")
    try:
        lay = imagekit.app_image(work)
        lay.push("app", f"{r.addr}/test/app:1")
        lay.push("base", f"{r.addr}/test/base:1")
        lay.last = "base"

        def own_layer(rootfs: str) -> None:
            with open(os.path.join(rootfs, "data", "other.txt"), "w") as f:
                f.write("other\n")

        lay.layer("other", own_layer)
        lay.push("other", f"{r.addr}/test/other:1")
        imagekit.add_index(lay, "multi", {"linux/amd64": "app", "linux/arm64": "other"})
        imagekit.run("skopeo", "copy", "--all", "--dest-tls-verify=false", f"oci:{lay.dir}:multi",
                     f"docker://{r.addr}/test/multi:1")
        yield r, lay
    finally:
        r.stop()
        shutil.rmtree(work, ignore_errors=True)


def layer_dirs(env) -> list[str]:
    d = os.path.join(env.root, "images", "layers", "sha256")
    return sorted(os.listdir(d)) if os.path.isdir(d) else []


def blobs(env) -> list[str]:
    d = os.path.join(env.root, "images", "blobs", "sha256")
    return sorted(os.listdir(d)) if os.path.isdir(d) else []


def du(path: str) -> int:
    return int(subprocess.run(["du", "-sb", path], capture_output=True, text=True, check=True).stdout.split()[0])


def pull(env, ref: str) -> None:
    env.ok("pull", "--tls-verify=false", ref, timeout=120)


def test_a_pulled_image_runs_with_its_layers_and_its_config(env, reg):
    r, _ = reg
    app = f"{r.addr}/test/app:1"
    pull(env, app)
    assert len(layer_dirs(env)) == 4
    # the image's config: Entrypoint /bin/echo + Cmd, User nobody, WorkingDir /data
    assert env.ok("run", "--rm", app).out == "from-image-cmd\n"
    assert env.ok("run", "--rm", app, "given").out == "given\n"  # CMD replaced, Entrypoint kept
    script = ("id -u; pwd; echo $APP $PATH $X; ls /data; cat /data/dir/new.txt; "
              "stat -c '%i %a %Y' /data/suid /data/hardlink")
    out = env.ok("run", "--rm", "--entrypoint", "sh", "-e", "X=2", app, "-c", script).out.splitlines()
    assert out[0] == "65534" and out[1] == "/data" and out[2] == "1 /bin:/sbin 2"
    assert out[3:7] == ["dir", "hardlink", "kept.txt", "suid"]  # gone.txt deleted by a later layer
    assert out[7] == "new"  # the replaced directory: its old file is gone
    assert not any("old.txt" in line for line in out)
    suid, link = out[-2].split(), out[-1].split()
    assert suid[0] == link[0] and suid[1:] == ["4755", "1000000000"]  # one inode, setuid and mtime kept
    out = env.ok("run", "--rm", "-u", "0", "-w", "/", "--entrypoint", "", app, "ls", "/data/dir").out
    assert out == "new.txt\n"
    env.ok("run", "-d", "--name", env.name("c"), "-l", "mine=1", app, "x")
    c = env.inspect(env.name("c"))
    img = env.ok("image", "inspect", app).json()[0]
    assert c["image_digest"] == img["digest"] and c["labels"] == {"org.test": "yes", "mine": "1"}
    assert c["spec"]["stop_signal"] == "SIGUSR1" and img["containers"] == [env.name("c")]
    listed = env.ok("images", "--format", "json").json()
    assert [v["tags"] for v in listed] == [[f"{r.addr}/test/app:1"]] and listed[0]["size"] > 1_000_000
    assert env.ok("run", "--rm", "busybox", "echo", "builtin").out == "builtin\n"  # needs no registry


def test_a_second_image_sharing_the_base_unpacks_only_its_own_layer(env, reg):
    r, _ = reg
    pull(env, f"{r.addr}/test/base:1")
    assert len(layer_dirs(env)) == 1
    layers = os.path.join(env.root, "images", "layers")
    base_use = du(layers)
    pull(env, f"{r.addr}/test/other:1")
    assert len(layer_dirs(env)) == 2
    grown = du(layers) - base_use
    assert 0 < grown < base_use / 20, f"the second image added {grown} bytes of layers beside the base's {base_use}"
    assert env.ok("run", "--rm", f"{r.addr}/test/other:1", "cat", "/data/other.txt", "/data/gone.txt").out == \
        "other\ndeleted later\n"


def test_a_multi_platform_index_gives_the_image_of_the_platform_asked_for(env, reg):
    r, _ = reg
    multi = f"{r.addr}/test/multi:1"
    arch = os.uname().machine
    if arch != "x86_64":
        pytest.skip("the index holds linux/amd64 and linux/arm64; the default pick is checked on amd64")
    pull(env, multi)
    assert env.ok("run", "--rm", multi, "amd64").out == "amd64\n"  # app's entrypoint echoes
    env.ok("rmi", multi)
    env.ok("pull", "--tls-verify=false", "--platform", "linux/arm64", multi, timeout=120)
    img = env.ok("image", "inspect", multi).json()[0]
    assert img["platform"] == "linux/arm64" and len(img["layers"]) == 2  # other: the base and its own layer
    res = env.ctl("pull", "--tls-verify=false", "--platform", "linux/s390x", multi, timeout=120)
    assert res.rc == 1 and len(res.err.splitlines()) == 1, res.err


def test_docker_and_oci_archives_import_as_the_same_image(env, reg):
    r, lay = reg
    tmp = tempfile.mkdtemp(prefix="shimd-archives-")
    try:
        docker_tar, oci_tar = os.path.join(tmp, "docker.tar"), os.path.join(tmp, "oci.tar")
        imagekit.run("skopeo", "copy", f"oci:{lay.dir}:app", f"docker-archive:{docker_tar}:{r.addr}/test/app:1")
        imagekit.run("skopeo", "copy", f"oci:{lay.dir}:app", f"oci-archive:{oci_tar}:app")
        assert env.ok("image", "import", docker_tar).out.strip() == f"{r.addr}/test/app:1"  # its RepoTags
        assert len(layer_dirs(env)) == 4
        env.ok("image", "import", "--tag", "local/app:oci", oci_tar)
        env.ok("image", "import", "--tag", "local/app:layout", "--ref", "app", lay.dir)
        assert len(layer_dirs(env)) == 4  # the same layers: nothing unpacked again
        views = env.ok("images", "--format", "json").json()
        by_tag = {t: v["digest"] for v in views for t in v["tags"]}
        assert by_tag["local/app:oci"] == by_tag["local/app:layout"]  # the same manifest: one image, two names
        assert len(views) <= 2  # skopeo rewrites a docker archive's config: another id, the same layers
        assert env.ok("run", "--rm", "local/app:oci", "from-oci").out == "from-oci\n"
        bad = os.path.join(tmp, "bad.tar")
        with open(bad, "wb") as f:
            f.write(b"not a tar at all" * 100)
        res = env.ctl("image", "import", bad)
        assert res.rc == 1 and "not a tar archive" in res.err and len(res.err.splitlines()) == 1
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def test_rm_is_refused_while_a_container_uses_the_image_and_prune_collects_everything(env, reg):
    r, _ = reg
    app = f"{r.addr}/test/app:1"
    pull(env, app)
    env.ok("tag", app, "local/app:again")
    assert env.ok("rmi", "local/app:again").out == "Untagged: local/app:again\n"  # one of two tags: untagged only
    env.ok("run", "-d", "--name", env.name("user"), app, "x")
    res = env.ctl("image", "rm", app)
    assert res.rc == 1 and f"container {env.name('user')} uses it" in res.err
    env.ok("image", "rm", "-f", app)  # untagged; the image stays for its container
    views = env.ok("images", "--format", "json").json()
    assert len(views) == 1 and views[0]["tags"] == []
    env.ok("image", "prune")
    assert len(layer_dirs(env)) == 4  # still used
    env.ok("rm", "-f", env.name("user"))
    assert "Deleted: sha256:" in env.ok("image", "prune").out
    assert env.ok("images", "-q").out == "" and layer_dirs(env) == [] and blobs(env) == []


def test_save_push_and_pull_back(env, reg):
    r, _ = reg
    app = f"{r.addr}/test/app:1"
    pull(env, app)
    tmp = tempfile.mkdtemp(prefix="shimd-save-")
    try:
        for fmt in ("docker", "oci"):
            out = os.path.join(tmp, f"app-{fmt}.tar")
            env.ok("image", "save", app, "-o", out, "--format", fmt)
            manifest = "manifest.json" if fmt == "docker" else "index.json"
            assert manifest in imagekit.run("tar", "tf", out).split()
        env.ok("push", "--tls-verify=false", app, f"{r.addr}/test/pushed:2", timeout=120)
        env.ok("rmi", app)
        assert layer_dirs(env) == []
        env.ok("image", "import", os.path.join(tmp, "app-docker.tar"))
        assert env.ok("run", "--rm", app, "saved").out == "saved\n"
        env.ok("rmi", app)
        pull(env, f"{r.addr}/test/pushed:2")
        assert env.ok("run", "--rm", f"{r.addr}/test/pushed:2", "pushed").out == "pushed\n"
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def test_a_failed_pull_says_why_in_one_line_and_keeps_nothing(env, reg):
    r, _ = reg
    for ref, words in ((f"{r.addr}/test/nosuch:1", "manifest unknown"),
                       ("127.0.0.1:1/test/app:1", "connection refused"),
                       ("Bad//Ref", "invalid reference")):
        res = env.ctl("pull", "--tls-verify=false", ref, timeout=120)
        assert res.rc == 1 and words in res.err.lower() and len(res.err.splitlines()) == 1, res.err
    assert env.ok("images", "-q").out == ""
    assert os.listdir(os.path.join(env.root, "images", "ingest")) == [] and blobs(env) == []
    res = env.ctl("run", "--rm", "no/such:image")
    assert res.rc == 125 and "no such image" in res.err
    index = os.path.join(env.root, "images", "index.json")
    assert not os.path.exists(index) or json.load(open(index))["images"] == {}


def test_a_registry_with_auth_needs_the_authfile_and_refuses_in_one_line_without(env, reg):
    _, lay = reg
    private = imagekit.Registry(auth=("tester", "s3cret"))
    try:
        ref = f"{private.addr}/test/private:1"
        lay.push("base", ref, "--dest-creds", "tester:s3cret")
        good = private.authfile(os.path.join(env.base, "auth.json"), "tester", "s3cret")
        wrong = private.authfile(os.path.join(env.base, "wrong.json"), "tester", "nope")
        for flags in ([], ["--authfile", wrong]):
            res = env.ctl("pull", "--tls-verify=false", *flags, ref, timeout=120)
            assert res.rc == 1 and len(res.err.splitlines()) == 1, res.err
            assert res.err.startswith(f"shimctl: unauthenticated: {ref}: "), res.err
        assert env.ok("images", "-q").out == "" and blobs(env) == []
        res = env.ctl("pull", "--tls-verify=false", "--authfile", "/no/such/auth.json", ref)
        assert res.rc == 1 and "/no/such/auth.json" in res.err and len(res.err.splitlines()) == 1
        env.ok("pull", "--tls-verify=false", "--authfile", good, ref, timeout=120)
        assert env.ok("run", "--rm", ref, "cat", "/data/kept.txt").out == "kept\n"
    finally:
        private.stop()


def test_pull_by_digest_keeps_the_image_untagged_and_runs_it_by_that_digest(env, reg):
    r, _ = reg
    digest = json.loads(imagekit.run("skopeo", "inspect", "--tls-verify=false",
                                     f"docker://{r.addr}/test/base:1"))["Digest"]
    by_digest = f"{r.addr}/test/base@{digest}"
    pull(env, by_digest)
    views = env.ok("images", "--format", "json").json()
    assert [(v["digest"], v["tags"]) for v in views] == [(digest, [])]
    assert env.ok("run", "--rm", by_digest, "cat", "/data/gone.txt").out == "deleted later\n"
    assert digest in env.ok("images", "--digests").out
    for ref, words in ((f"{r.addr}/test/base@sha256:{'0' * 64}", "manifest unknown"),
                       (f"{r.addr}/test/base@sha256:xyz", "invalid reference")):
        res = env.ctl("pull", "--tls-verify=false", ref, timeout=120)
        assert res.rc == 1 and words in res.err.lower() and len(res.err.splitlines()) == 1, res.err


def test_pull_shows_its_progress_on_a_terminal_and_one_line_otherwise(env, reg):
    r, _ = reg
    base, app = f"{r.addr}/test/base:1", f"{r.addr}/test/app:1"
    out = env.ok("pull", "--tls-verify=false", base, timeout=120).out
    digest = env.ok("image", "inspect", base).json()[0]["digest"]
    assert out == f"{base} {digest}\n"
    master, slave = pty.openpty()
    try:
        p = subprocess.Popen([PY, "-m", "shimctl", "--address", env.sock, "pull", "--tls-verify=false", app],
                             stdout=slave, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, cwd=REPO)
        os.close(slave)
        shown = b""
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO: the terminal's last writer is gone
                break
            if not chunk:
                break
            shown += chunk
        assert p.wait(120) == 0, p.stderr.read()  # type: ignore[union-attr]
        p.stderr.close()  # type: ignore[union-attr]
    finally:
        os.close(master)
    text = shown.decode().replace("\r\n", "\n")
    assert "\r\x1b[Kpulled: 4/4 layers, " in text and "unpacked\n" in text  # the last line the terminal shows
    assert text.endswith(f"{app} {env.ok('image', 'inspect', app).json()[0]['digest']}\n")
