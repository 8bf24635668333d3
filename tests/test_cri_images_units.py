"""The CRI image helpers without a manager: an image's user as uid or name, chain ids, repo digests, the auth file
entry of each credential form and the hosts it is written for (server_address, registries.conf mirrors)."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import tempfile

import pytest

from manager.cri import imageauth, imageviews
from manager.cri.pb import api_pb2
from shimproto.errors import InvalidArgument

pytestmark = pytest.mark.timeout(60)


@pytest.mark.parametrize("user, want", [
    ("", (None, "")), ("1003", (1003, "")), ("1003:1004", (1003, "")), ("www-data:1004", (None, "www-data")),
    ("0", (0, "")), ("1_000", (None, "1_000")), ("99999999999999999999", (None, "99999999999999999999")),
])
def test_an_images_user_is_a_uid_when_numeric_and_a_name_otherwise(user, want):
    assert imageviews.user_of({"config": {"User": user}}) == want
    assert imageviews.user_of({}) == (None, "")


def test_the_chain_id_of_one_layer_is_its_diffid_and_folds_the_next_ones():
    a, b = "sha256:" + "a" * 64, "sha256:" + "b" * 64
    assert imageviews.chain_id([a]) == a and imageviews.chain_id([]) == ""
    assert imageviews.chain_id([a, b]) == "sha256:" + hashlib.sha256(f"{a} {b}".encode()).hexdigest()


def test_repo_digests_are_each_tagged_repository_at_the_manifest_digest_once():
    d = "sha256:" + "d" * 64
    view = {"id": "sha256:" + "c" * 64, "digest": d, "size": 5,
            "repo_tags": ["registry.k8s.io/t:1", "registry.k8s.io/t:2", "docker.io/library/busybox:latest"]}
    img = imageviews.to_image(view, {"config": {"User": "7"}})
    assert list(img.repo_digests) == [f"registry.k8s.io/t@{d}", f"docker.io/library/busybox@{d}"]
    assert img.uid.value == 7 and img.spec.image == view["id"] and img.size == 5
    assert not imageviews.to_image(view, {}).HasField("uid")


def test_each_credential_form_becomes_one_auth_entry_and_bad_ones_are_invalid():
    userpass = base64.b64encode(b"u:p").decode()
    assert imageauth.entry(api_pb2.AuthConfig(username="u", password="p")) == {"auth": userpass}
    assert imageauth.entry(api_pb2.AuthConfig(auth=base64.b64encode(b"u:p\0\0").decode())) == {"auth": userpass}
    assert imageauth.entry(api_pb2.AuthConfig(identity_token="tok")) == {"identitytoken": "tok"}
    assert imageauth.entry(api_pb2.AuthConfig()) is None  # anonymous
    for bad in (api_pb2.AuthConfig(auth="!!"), api_pb2.AuthConfig(auth=base64.b64encode(b"nocolon").decode()),
                api_pb2.AuthConfig(registry_token="t")):
        with pytest.raises(InvalidArgument):
            imageauth.entry(bad)


@pytest.fixture
def tmp():
    d = tempfile.mkdtemp(prefix="shimd-auth-")
    yield d
    shutil.rmtree(d)


def test_credentials_go_to_the_server_address_only_or_to_every_host_the_pull_may_contact(tmp):
    d = tmp
    conf = os.path.join(d, "registries.conf")
    with open(conf, "w") as f:
        f.write('[[registry]]\nprefix = "registry.k8s.io"\nlocation = "registry.k8s.io"\n'
                '[[registry.mirror]]\nlocation = "127.0.0.1:5000/registry.k8s.io"\n'
                '[[registry]]\nprefix = "registry.k8s.io/private"\nlocation = "127.0.0.1:5001/p"\n'
                '[[registry]]\nprefix = "*.example.test"\nlocation = "127.0.0.1:5002"\n')
    auth = api_pb2.AuthConfig(username="u", password="p")
    assert imageauth.hosts_for(auth, "registry.k8s.io/pause:3.6", conf) == ["registry.k8s.io", "127.0.0.1:5000"]
    assert imageauth.hosts_for(auth, "registry.k8s.io/private/x", conf) == ["registry.k8s.io", "127.0.0.1:5001"]
    assert imageauth.hosts_for(auth, "a.example.test/x", conf) == ["a.example.test", "127.0.0.1:5002"]
    assert imageauth.hosts_for(auth, "busybox", conf) == ["docker.io"]
    assert imageauth.hosts_for(auth, "busybox", "") == ["docker.io"]
    with_addr = api_pb2.AuthConfig(username="u", password="p", server_address="https://127.0.0.1:5009/v2/")
    assert imageauth.hosts_for(with_addr, "registry.k8s.io/pause:3.6", conf) == ["127.0.0.1:5009"]
    with imageauth.auth_file(d, auth, "registry.k8s.io/pause:3.6", conf) as path:
        assert os.stat(path).st_mode & 0o777 == 0o600 and os.stat(os.path.dirname(path)).st_mode & 0o777 == 0o700
        assert set(json.load(open(path))["auths"]) == {"registry.k8s.io", "127.0.0.1:5000"}
    assert not os.path.exists(path)
    with imageauth.auth_file(d, None, "busybox", conf) as path:
        assert path == ""
