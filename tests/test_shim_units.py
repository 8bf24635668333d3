"""Pure pieces of the shim: exec users from the container's own passwd/group, the /etc files, exec env merging,
the OCI bind mounts, and the table of repeated calls."""

from __future__ import annotations

import asyncio
import os

import pytest

from runtime.bundle import BindMount, Spec, exec_process, merge_env
from shimd.etcfiles import container_resolv_conf, write_etc_files
from shimd.keys import KeyedCalls
from shimd.users import resolve_user
from shimproto.errors import InvalidArgument, InvalidState
from shimproto.wire import Params


@pytest.fixture
def rootfs(tmp_path):
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\napp:x:1000:1001::/home/app:/bin/sh\n")
    (etc / "group").write_text("root:x:0:\napp:x:1001:\nwheel:x:10:app,other\naudio:x:29:app\n")
    return str(tmp_path)


@pytest.mark.parametrize("spec,expect", [
    ("0", {"uid": 0, "gid": 0}),
    ("app", {"uid": 1000, "gid": 1001, "additionalGids": [10, 29]}),
    ("1000", {"uid": 1000, "gid": 1001, "additionalGids": [10, 29]}),
    ("4242", {"uid": 4242, "gid": 0}),
    ("4242:7", {"uid": 4242, "gid": 7}),
    ("app:wheel", {"uid": 1000, "gid": 10, "additionalGids": [29]}),
])
def test_exec_users_are_resolved_in_the_containers_own_files(rootfs, spec, expect):
    assert resolve_user(rootfs, spec) == expect


def test_an_unknown_user_or_group_is_named_and_links_out_of_the_rootfs_are_not_followed(rootfs, tmp_path):
    for bad, named in (("ghost", "'ghost'"), ("app:ghosts", "'ghosts'"), (":1", "':1'"), ("1:", "'1:'")):
        with pytest.raises(InvalidArgument, match=named):
            resolve_user(rootfs, bad)
    os.unlink(os.path.join(rootfs, "etc", "passwd"))
    os.symlink("/etc/passwd", os.path.join(rootfs, "etc", "passwd"))  # the host's: must not be read
    with pytest.raises(InvalidArgument, match="root"):
        resolve_user(rootfs, "root")


def test_resolv_conf_drops_loopback_nameservers_only():
    host = "# c\nnameserver 127.0.0.53\nnameserver ::1\nnameserver 10.1.2.3\nsearch example\noptions edns0\n"
    assert container_resolv_conf(host) == "# c\nnameserver 10.1.2.3\nsearch example\noptions edns0\n"
    assert container_resolv_conf("nameserver 127.0.0.11\n") == ""


def test_a_host_with_only_the_systemd_resolved_stub_gives_resolveds_upstream_servers(tmp_path):
    (tmp_path / "stub").write_text("nameserver 127.0.0.53\noptions edns0\n")
    (tmp_path / "upstream").write_text("nameserver 192.0.2.7\n")
    write_etc_files(str(tmp_path / "c"), "h", str(tmp_path / "stub"), str(tmp_path / "upstream"))
    assert (tmp_path / "c" / "resolv.conf").read_text() == "nameserver 192.0.2.7\n"
    write_etc_files(str(tmp_path / "d"), "h", str(tmp_path / "stub"), str(tmp_path / "none"))
    assert (tmp_path / "d" / "resolv.conf").read_text() == "options edns0\n"


def test_etc_files_are_written_and_bind_mounted(tmp_path):
    resolv = tmp_path / "host-resolv"
    resolv.write_text("nameserver 192.0.2.1\n")
    binds = write_etc_files(str(tmp_path / "c"), "web", str(resolv), str(tmp_path / "none"))
    assert [b.destination for b in binds] == ["/etc/hostname", "/etc/hosts", "/etc/resolv.conf"]
    assert (tmp_path / "c" / "hostname").read_text() == "web\n"
    assert (tmp_path / "c" / "hosts").read_text().endswith("ff02::2\tip6-allrouters\n127.0.1.1\tweb\n")
    assert (tmp_path / "c" / "resolv.conf").read_text() == "nameserver 192.0.2.1\n"
    oci = Spec(args=["true"], hostname="web", cgroups_path="/x", binds=binds).to_oci()
    assert oci["mounts"][-1] == {"destination": "/etc/resolv.conf", "type": "bind",
                                 "source": str(tmp_path / "c" / "resolv.conf"), "options": ["rbind", "rprivate", "rw"]}
    assert BindMount("/a", "/b", readonly=True).to_oci()["options"][-1] == "ro"


def test_exec_env_is_merged_over_the_containers_and_user_replaces_its_user():
    assert merge_env(["PATH=/bin", "A=1", "B=2"], ["A=x", "C=3"]) == ["PATH=/bin", "A=x", "B=2", "C=3"]
    base = {"args": ["sh"], "env": ["PATH=/bin"], "cwd": "/", "user": {"uid": 0, "gid": 0}}
    proc = exec_process(base, ["id"], ["X=1"], "/tmp", False, {"uid": 5, "gid": 6})
    assert (proc["env"], proc["cwd"], proc["user"]) == (["PATH=/bin", "X=1"], "/tmp", {"uid": 5, "gid": 6})
    assert base["env"] == ["PATH=/bin"]


def test_keyed_calls_run_once_and_answer_repeats_with_the_first_outcome():
    runs: list[str] = []

    async def handler(p: Params) -> object:
        runs.append(p.str("v"))
        await asyncio.sleep(0.01)
        if p.str("v") == "bad":
            raise InvalidState("no")
        return {"v": p.str("v")}

    async def go() -> None:
        keyed = KeyedCalls(size=2)
        call = keyed.wrap("kill", handler, lambda m, p, r: r)
        a, b = await asyncio.gather(call(Params("kill", {"v": "1", "key": "a"})),
                                    call(Params("kill", {"v": "2", "key": "a"})))
        assert a == b == {"v": "1"}
        for _ in range(2):
            with pytest.raises(InvalidState):
                await call(Params("kill", {"v": "bad", "key": "b"}))
        await call(Params("kill", {"v": "3"}))  # no key: always runs
        await call(Params("kill", {"v": "3"}))
        await call(Params("kill", {"v": "4", "key": "c"}))  # the table holds 2: "a" is forgotten
        assert await call(Params("kill", {"v": "5", "key": "a"})) == {"v": "5"}

    asyncio.run(go())
    assert runs == ["1", "bad", "3", "3", "4", "5"]
