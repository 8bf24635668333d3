"""CRI's ImageService (manager/cri/image_service.py) end to end: a real manager (the harness's), real registries
on 127.0.0.1 (docker-registry, one of them with htpasswd auth) holding critest's stand-in images
(tests/cri_images.py), reached by their upstream names through a registries.conf mirror, and the service served by
gRPC on a unix socket in the test's base dir, called through the generated stub as kubelet would."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
from concurrent import futures

import grpc
import pytest

from manager.cri.calls import Manager
from manager.cri.config import CriConfig
from manager.cri.image_service import ImageService
from manager.cri.pb import api_pb2, api_pb2_grpc
from tests import cri_images, imagekit
from tests.critest_env import critest_env, run_critest

pytestmark = pytest.mark.timeout(300)

USER, PASSWORD = "tester", "s3cret"
X = "registry.k8s.io/test/x:1"  # User "1003:1004"
NAMED = "registry.k8s.io/test/named"  # :latest, User "www-data:1004"
TAGS = [f"registry.k8s.io/test/tags:{n}" for n in (1, 2, 3)]  # one image under three tags
PRIVATE = "private/app:1"  # in the registry with auth only


class World:
    def __init__(self) -> None:
        self.layout = cri_images.ensure_images()
        self.dir = tempfile.mkdtemp(prefix="shimd-cri-images-")
        self.open = imagekit.Registry()
        self.private = imagekit.Registry(auth=(USER, PASSWORD))
        names = {X: "user-uid-group", NAMED: "user-username-group", **{t: "test-image-tags" for t in TAGS}}
        cri_images.push_all(self.layout, self.open.addr, [], names)
        imagekit.run("skopeo", "copy", "--quiet", "--dest-tls-verify=false", "--dest-creds", f"{USER}:{PASSWORD}",
                     f"oci:{self.layout}:busybox", f"docker://{self.private.addr}/{PRIVATE}")
        self.conf = os.path.join(self.dir, "registries.conf")
        with open(self.conf, "w") as f:
            f.write(f'unqualified-search-registries = []\n\n'
                    f'[[registry]]\nprefix = "registry.k8s.io"\nlocation = "registry.k8s.io"\n\n'
                    f'[[registry.mirror]]\nlocation = "{self.open.addr}/registry.k8s.io"\ninsecure = true\n\n'
                    f'[[registry]]\nprefix = "registry.k8s.io/private"\nlocation = "registry.k8s.io/private"\n\n'
                    f'[[registry.mirror]]\nlocation = "{self.private.addr}/private"\ninsecure = true\n\n'
                    f'[[registry]]\nlocation = "{self.open.addr}"\ninsecure = true\n\n'
                    f'[[registry]]\nlocation = "{self.private.addr}"\ninsecure = true\n')

    def close(self) -> None:
        self.open.stop()
        self.private.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="module")
def world():
    w = World()
    try:
        yield w
    finally:
        w.close()


class VersionOnly(api_pb2_grpc.RuntimeServiceServicer):
    """The one runtime call critest's client makes before the image specs: which CRI version is served."""

    def Version(self, request, context):
        return api_pb2.VersionResponse(version="0.1.0", runtime_name="shimd", runtime_version="test",
                                       runtime_api_version="v1")


def serve(env, registries_conf: str) -> tuple[grpc.Server, str]:
    """The ImageService (and VersionOnly) in a gRPC server of this process, on a unix socket in env's base dir,
    over env's manager."""
    service = ImageService(CriConfig(registries_conf=registries_conf), env.state, Manager(env.sock))
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    api_pb2_grpc.add_ImageServiceServicer_to_server(service, server)
    api_pb2_grpc.add_RuntimeServiceServicer_to_server(VersionOnly(), server)
    sock = os.path.join(env.base, "cri-images.sock")
    assert server.add_insecure_port("unix:" + sock)
    server.start()
    return server, sock


@pytest.fixture
def cri(env, world):
    """An ImageService stub over env's manager, with world's registries.conf."""
    server, sock = serve(env, world.conf)
    channel = grpc.insecure_channel("unix:" + sock)
    try:
        yield api_pb2_grpc.ImageServiceStub(channel)
    finally:
        channel.close()
        server.stop(0).wait()


def spec(image: str) -> api_pb2.ImageSpec:
    return api_pb2.ImageSpec(image=image)


def pull(cri, image: str, auth: api_pb2.AuthConfig | None = None) -> str:
    return cri.PullImage(api_pb2.PullImageRequest(image=spec(image), auth=auth), timeout=180).image_ref


def status(cri, image: str, verbose: bool = False) -> api_pb2.ImageStatusResponse:
    return cri.ImageStatus(api_pb2.ImageStatusRequest(image=spec(image), verbose=verbose))


def listed(cri, image: str = "") -> list[api_pb2.Image]:
    req = api_pb2.ListImagesRequest(filter=api_pb2.ImageFilter(image=spec(image))) if image else \
        api_pb2.ListImagesRequest()
    return list(cri.ListImages(req).images)


def code_of(fn, *args) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as e:
        fn(*args)
    return e.value.code()


def test_a_pull_through_a_mirror_is_listed_and_its_status_is_the_same_by_id_tag_and_digest(cri):
    id = pull(cri, X)
    assert id.startswith("sha256:") and len(id) == 71
    [img] = listed(cri)
    assert img.id == id and list(img.repo_tags) == [X] and img.spec.image == id and not img.pinned
    [digest_ref] = img.repo_digests
    assert digest_ref.startswith("registry.k8s.io/test/x@sha256:") and img.size > 0
    assert img.HasField("uid") and img.uid.value == 1003 and img.username == ""  # User "1003:1004"
    for name in (id, X, digest_ref, id.removeprefix("sha256:")):
        got = status(cri, name)
        assert got.image == img, name
        assert listed(cri, name) == [img], name
    info = json.loads(status(cri, X, verbose=True).info["info"])
    assert info["imageSpec"]["config"]["User"] == "1003:1004" and info["chainID"].startswith("sha256:")


def test_an_image_that_is_not_there_has_an_empty_status_and_lists_nothing(cri):
    for name in ("registry.k8s.io/test/none:1", "sha256:" + "0" * 64, "NOT A REFERENCE", ""):
        assert not status(cri, name).HasField("image"), name
    assert listed(cri) == [] and listed(cri, "registry.k8s.io/test/none:1") == []


def test_a_reference_without_a_tag_is_latest_and_a_user_name_is_the_username(cri, world):
    id = pull(cri, NAMED)
    img = status(cri, NAMED + ":latest").image
    assert img.id == id and list(img.repo_tags) == [NAMED + ":latest"]
    assert img.username == "www-data" and not img.HasField("uid")  # User "www-data:1004"


def test_a_pull_of_an_image_the_registry_lacks_is_not_found(cri, world):
    assert code_of(pull, cri, f"{world.open.addr}/registry.k8s.io/test/none:1") == grpc.StatusCode.NOT_FOUND
    assert code_of(pull, cri, "") == grpc.StatusCode.INVALID_ARGUMENT
    assert code_of(pull, cri, "Bad//Reference") == grpc.StatusCode.INVALID_ARGUMENT


def test_removing_an_image_by_id_or_by_one_tag_removes_every_tag(cri):
    ids = {pull(cri, t) for t in TAGS}
    assert len(ids) == 1
    [img] = listed(cri)
    assert sorted(img.repo_tags) == TAGS and len(img.repo_digests) == 1  # one repository, one digest
    cri.RemoveImage(api_pb2.RemoveImageRequest(image=spec(img.id)))
    assert listed(cri) == [] and not any(status(cri, t).HasField("image") for t in TAGS)
    cri.RemoveImage(api_pb2.RemoveImageRequest(image=spec(img.id)))  # gone already: success
    for t in TAGS[:2]:
        pull(cri, t)
    cri.RemoveImage(api_pb2.RemoveImageRequest(image=spec(TAGS[0])))  # one name: the whole image
    assert listed(cri) == []


def test_an_image_a_container_uses_loses_its_names_and_stays_for_the_container(cri, env):
    id = pull(cri, X)
    env.ok("run", "-d", "--name", env.name("user"), X, "sleep", "60")
    cri.RemoveImage(api_pb2.RemoveImageRequest(image=spec(X)))
    assert not status(cri, X).HasField("image")  # no name of CRI's reaches it
    [left] = listed(cri)  # its content stays, untagged, while the container runs
    assert left.id == id and list(left.repo_tags) == [] and list(left.repo_digests) == []
    assert env.inspect(env.name("user"))["status"] == "running"
    env.ok("rm", "-f", env.name("user"))
    cri.RemoveImage(api_pb2.RemoveImageRequest(image=spec(id)))  # as kubelet's image GC does, by id
    assert listed(cri) == []


def test_a_registry_with_auth_takes_the_pulls_credentials_in_each_form_and_refuses_wrong_ones(cri, world, env):
    direct = f"{world.private.addr}/{PRIVATE}"
    good = api_pb2.AuthConfig(username=USER, password=PASSWORD)
    wrong = api_pb2.AuthConfig(username=USER, password="nope")
    elsewhere = api_pb2.AuthConfig(username=USER, password=PASSWORD, server_address="https://127.0.0.1:1")
    for auth in (None, wrong, elsewhere):
        assert code_of(pull, cri, direct, auth) == grpc.StatusCode.UNAUTHENTICATED, auth
    id = pull(cri, direct, good)
    token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    assert pull(cri, direct, api_pb2.AuthConfig(auth=token, server_address=world.private.addr)) == id
    assert pull(cri, "registry.k8s.io/" + PRIVATE, good) == id  # through the mirror: its host gets them too
    bad = api_pb2.AuthConfig(auth="not base64!")
    assert code_of(pull, cri, direct, bad) == grpc.StatusCode.INVALID_ARGUMENT
    assert not [n for n in os.listdir(env.state) if n.startswith("cri-auth-")]  # no credentials left on disk


def test_concurrent_pulls_of_one_reference_all_answer_the_image(cri):
    results: list[object] = []

    def one() -> None:
        try:
            results.append(pull(cri, X))
        except grpc.RpcError as e:
            results.append(e)

    threads = [threading.Thread(target=one) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(200)
    assert len(results) == 3 and len(set(results)) == 1 and str(results[0]).startswith("sha256:"), results


def test_image_fs_info_is_the_stores_directory_and_what_it_holds(cri, env):
    before = time.time_ns()
    pull(cri, X)
    [fs] = cri.ImageFsInfo(api_pb2.ImageFsInfoRequest()).image_filesystems
    assert fs.fs_id.mountpoint == os.path.join(env.root, "images")
    assert before <= fs.timestamp <= time.time_ns()
    # as du counts: blocks, each inode once (busybox's applets are hard links of one file); work in progress aside
    store = fs.fs_id.mountpoint

    def du(*flags: str) -> int:
        out = subprocess.run(["du", "-s", "--exclude=ingest", *flags, store], capture_output=True, text=True,
                             check=True).stdout
        return int(out.split()[0])

    assert fs.used_bytes.value == du("-B1") > 1 << 20 and fs.inodes_used.value == du("--inodes") > 10


def test_critest_image_specs_pass(bare_env):
    """critest's "Image Manager" specs (the stand-ins under their upstream names, via critest_env's registries.conf
    mirrors), the manager inside critest_env's namespaces as test_critest runs it."""
    with critest_env() as crit:
        bare_env.wrap = crit.enter()
        bare_env.start_manager()
        server, sock = serve(bare_env, crit.registries_conf)
        try:
            result = run_critest(f"unix://{sock}", crit, focus="Image Manager", timeout=600)
        finally:
            server.stop(0).wait()
    assert result.failed == [] and len(result.passed) >= 6, result.summary() + "\n" + result.failure_table()
