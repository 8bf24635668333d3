"""The image store's pieces without a manager: the layer unpacker against crafted hostile archives, whiteouts as
overlay's, blobs checked against their digests, the transfer state table, the image config applied as docker does,
references, skopeo's argv and error classes."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import shutil
import stat
import tarfile
import tempfile

import pytest

from manager.images import config, pull, reference, unpack
from manager.images.content import ContentStore
from runtime import skopeo
from shimproto.errors import InvalidArgument, InvalidState
from shimproto.spec import MOUNT_DATA_MAX, ContainerSpec, overlay_data

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def tmp():
    d = tempfile.mkdtemp(prefix="shimd-unpack-")
    yield d
    shutil.rmtree(d, ignore_errors=True)


def layer(path: str, entries: list[tuple], gz: bool = True) -> str:
    """A layer tar at path from (name, kind, extra) entries: kind file (extra: bytes), dir, sym/link (extra: target),
    xattr file (extra: {name: value}); returns its diffid."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, kind, extra in entries:
            m = tarfile.TarInfo(name)
            m.mtime = 1_234_567_890
            data = None
            if kind == "file":
                data, m.size, m.mode = extra, len(extra), 0o4755 if name.endswith("suid") else 0o644
            elif kind == "dir":
                m.type, m.mode = tarfile.DIRTYPE, 0o755
            elif kind in ("sym", "link"):
                m.type, m.linkname = (tarfile.SYMTYPE if kind == "sym" else tarfile.LNKTYPE), extra
            elif kind == "xattr":
                m.pax_headers = {f"SCHILY.xattr.{k}": v for k, v in extra.items()}
            tf.addfile(m, io.BytesIO(data) if data is not None else None)
    tar = raw.getvalue()
    with open(path, "wb") as f:
        f.write(gzip.compress(tar) if gz else tar)
    return "sha256:" + hashlib.sha256(tar).hexdigest()


def everything_under(d: str) -> set[str]:
    return {os.path.relpath(os.path.join(p, n), d) for p, ds, fs in os.walk(d) for n in ds + fs}


def test_a_layer_keeps_modes_links_times_and_turns_oci_whiteouts_into_overlay_ones(tmp):
    blob, dest = os.path.join(tmp, "l.tgz"), os.path.join(tmp, "out")
    os.mkdir(dest)
    diffid = layer(blob, [("./", "dir", None), ("a/", "dir", None), ("a/suid", "file", b"x"),
                          ("a/hard", "link", "a/suid"), ("a/abs", "sym", "/etc/passwd"), ("a/.wh.gone", "file", b""),
                          ("b/.wh..wh..opq", "file", b""), ("b/new", "file", b"n"),
                          ("c", "xattr", {"user.k": "v"})])
    assert unpack.unpack(blob, dest) == diffid
    st = os.lstat(os.path.join(dest, "a", "suid"))
    assert stat.S_IMODE(st.st_mode) == 0o4755 and st.st_nlink == 2 and st.st_mtime == 1_234_567_890
    assert os.lstat(os.path.join(dest, "a", "hard")).st_ino == st.st_ino
    assert os.readlink(os.path.join(dest, "a", "abs")) == "/etc/passwd"  # for the container's root, never followed
    gone = os.lstat(os.path.join(dest, "a", "gone"))
    assert stat.S_ISCHR(gone.st_mode) and gone.st_rdev == 0
    assert os.getxattr(os.path.join(dest, "b"), "trusted.overlay.opaque") == b"y"
    assert os.getxattr(os.path.join(dest, "c"), "user.k") == b"v"
    assert os.stat(os.path.join(dest, "a")).st_mtime == 1_234_567_890  # set after its entries


HOSTILE = [
    ("dotdot", [("../escaped", "file", b"x")], "'..'"),
    ("absolute", [("/escaped", "file", b"x")], "absolute"),
    ("through a symlink", [("link", "sym", "/tmp"), ("link/escaped", "file", b"x")], "symlink|outside"),
    ("through a relative symlink", [("up", "sym", "../.."), ("up/escaped", "file", b"x")], "symlink|outside"),
    ("hard link out", [("h", "link", "../../etc/passwd")], "outside|hard link"),
    ("hard link absolute", [("h", "link", "/etc/passwd")], "absolute|outside|hard link"),
    ("overlay xattr", [("r", "xattr", {"trusted.overlay.redirect": "/x"})], "overlay's own xattr"),
    ("whiteout through a symlink", [("s", "sym", "/tmp"), ("s/.wh.escaped", "file", b"")], "symlink|outside"),
]


@pytest.mark.parametrize("name,entries,words", HOSTILE, ids=[h[0] for h in HOSTILE])
def test_a_hostile_layer_is_refused_and_writes_nothing_outside(tmp, name, entries, words):
    outside = os.path.join(tmp, "outside")
    os.mkdir(outside)
    dest = os.path.join(outside, "deep", "dest")
    os.makedirs(dest)
    blob = os.path.join(tmp, "evil.tgz")
    layer(blob, entries)
    before = everything_under(outside)
    with pytest.raises(unpack.UnsafeLayer, match=words):
        unpack.unpack(blob, dest)
    new = everything_under(outside) - before
    assert all(p.startswith(os.path.join("deep", "dest") + os.sep) for p in new), new
    assert not os.path.exists("/tmp/escaped") and not os.path.exists(os.path.join(tmp, "escaped"))


def test_a_blob_or_layer_that_does_not_match_its_digest_is_not_kept(tmp):
    store = ContentStore(tmp)
    src = os.path.join(store.ingest, "blob")
    with open(src, "wb") as f:
        f.write(b"content")
    with pytest.raises(InvalidArgument, match="does not match"):
        store.put_blob(src, "sha256:" + "0" * 64, 7)
    assert os.listdir(store.blobs) == [] and not os.path.exists(src)
    blob = os.path.join(store.ingest, "l")
    diffid = layer(blob, [("f", "file", b"1")])
    digest = store.put_blob(blob, "sha256:" + hashlib.sha256(open(blob, "rb").read()).hexdigest(), None)
    with pytest.raises(InvalidArgument, match="is not the diffid"):
        store.add_layer("sha256:" + os.path.basename(digest), "sha256:" + "1" * 64)
    assert os.listdir(store.layers) == [] and os.listdir(store.ingest) == []
    assert store.add_layer("sha256:" + os.path.basename(digest), diffid)[0]
    assert not store.add_layer("sha256:" + os.path.basename(digest), diffid)[0]  # once
    assert store.gc(set()) == (1, 1) and os.listdir(store.layers) == []  # nothing lists them: garbage


def test_the_transfer_state_table_is_closed_and_refuses_other_moves():
    for (state, _event), nxt in pull.TRANSITIONS.items():
        assert state in pull.STATES and nxt in pull.STATES
    t = pull.Transfer("src", "/nonexistent")
    t.move("fetched")
    t.move("stored")
    assert t.state.finished
    with pytest.raises(InvalidState, match="cannot fail while done"):
        t.move("fail")
    t = pull.Transfer("src", "/nonexistent")
    with pytest.raises(InvalidState, match="cannot stored while fetching"):
        t.move("stored")


def test_a_transfer_counts_the_layers_skopeo_started_and_finished_and_the_bytes_in_hand(tmp):
    layout = os.path.join(tmp, "layout")
    os.makedirs(os.path.join(layout, "blobs", "sha256"))
    t = pull.Transfer("src", layout)
    assert t.view()["layers"] == 0  # skopeo has said nothing yet
    done, busy = "a" * 64, "b" * 64
    with open(t.progress_path, "w") as f:
        f.write(f"Getting image source signatures\nCopying blob sha256:{done}\nCopying blob sha256:{busy}\n"
                f"Copying config sha256:{'c' * 64}\n")
    for path, size in ((os.path.join(layout, "blobs", "sha256", done), 100), (os.path.join(layout, "put-blob"), 7)):
        with open(path, "wb") as f:
            f.write(b"x" * size)
    v = t.view()
    assert (v["state"], v["layers_done"], v["layers"], v["bytes"]) == ("fetching", 1, 2, 107)
    t.move("fetched")
    v = t.view()
    assert (v["state"], v["layers_done"], v["layers"], v["bytes"]) == ("unpacking", 2, 2, 107)


IMAGE = {"config": {"Entrypoint": ["/ep"], "Cmd": ["c1"], "Env": ["PATH=/img", "A=1"], "WorkingDir": "/w",
                    "User": "u", "StopSignal": "SIGQUIT", "Labels": {"l": "img", "m": "img"}}}


@pytest.mark.parametrize("args,entrypoint,want", [
    ([], None, ["/ep", "c1"]),  # the image's both
    (["x"], None, ["/ep", "x"]),  # CMD replaced
    ([], ["/other"], ["/other"]),  # --entrypoint drops the image's Cmd
    (["x"], ["/other"], ["/other", "x"]),
    (["sh"], [], ["sh"]),  # --entrypoint ""
])
def test_the_image_config_is_applied_as_docker_applies_it(args, entrypoint, want):
    spec = ContainerSpec(args=args, image="i", entrypoint=entrypoint, env=["A=2", "B=3"], cwd="",
                         labels={"m": "mine"})
    config.apply(spec, IMAGE)
    assert spec.args == want and spec.env == ["PATH=/img", "A=2", "B=3"] and spec.cwd == "/w"
    assert (spec.user, spec.stop_signal, spec.labels) == ("u", "SIGQUIT", {"l": "img", "m": "mine"})


def test_an_image_with_no_command_and_none_given_is_refused():
    with pytest.raises(InvalidArgument, match="no command specified"):
        config.apply(ContainerSpec(args=[], image="i", entrypoint=[]), IMAGE)
    spec = ContainerSpec(args=["x"], image="i", cwd="/given", user="0")
    config.apply(spec, {"config": {}})
    assert spec.env[0].startswith("PATH=") and (spec.cwd, spec.user) == ("/given", "0")


def test_references_are_normalized_as_docker_does():
    assert str(reference.parse("redis")) == "docker.io/library/redis:latest"
    assert reference.parse("127.0.0.1:5000/a/b:1").familiar == "127.0.0.1:5000/a/b:1"
    assert reference.parse("docker.io/library/x:2").familiar == "x:2"
    for bad in ("UPPER", "a@sha256:12", "x:", "a//b"):
        with pytest.raises(InvalidArgument, match="invalid reference"):
            reference.parse(bad)


def test_skopeo_options_render_to_argv_and_its_errors_are_typed():
    assert skopeo.CopyOpts(src_tls_verify=False, authfile="/a").args() == [
        "--src-tls-verify=false", "--authfile", "/a", "--remove-signatures"]
    assert skopeo.Platform.parse("linux/arm/v7").args() == [
        "--override-os", "linux", "--override-arch", "arm", "--override-variant", "v7"]
    with pytest.raises(ValueError):
        skopeo.Platform.parse("a/b/c/d")
    fatal = 'time="x" level=fatal msg="reading manifest 1 in 127.0.0.1:5/t: manifest unknown: manifest unknown"'
    assert isinstance(skopeo.classify("skopeo copy", fatal, 1), skopeo.ImageNotFound)
    assert isinstance(skopeo.classify("skopeo copy", "x: connection refused", 1), skopeo.Unreachable)
    assert isinstance(skopeo.classify("skopeo copy", "unauthorized: authentication required", 1),
                      skopeo.Unauthorized)
    assert type(skopeo.classify("skopeo copy", "", 2)) is skopeo.SkopeoError


def test_a_registries_conf_is_a_global_flag_of_skopeo_given_only_when_set():
    plain = skopeo.Skopeo(monitor=None, platform=skopeo.Platform(arch="amd64"))  # type: ignore[arg-type]
    assert "--registries-conf" not in plain._global()
    conf = skopeo.Skopeo(monitor=None, platform=skopeo.Platform(arch="amd64"),  # type: ignore[arg-type]
                         registries_conf="/etc/r.conf")
    argv = conf._global()
    assert argv[argv.index("--registries-conf") + 1] == "/etc/r.conf"


def test_overlay_options_past_a_page_are_caught_before_a_mount():
    lowers = ":".join(f"/var/lib/shimd/images/layers/sha256/{'a' * 64}" for _ in range(38))
    assert len(overlay_data(lowers, "/u", "/w")) <= MOUNT_DATA_MAX
    assert len(overlay_data(lowers + ":" + lowers, "/u", "/w")) > MOUNT_DATA_MAX
