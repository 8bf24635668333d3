"""Bad input: one clear line naming the problem, a non-zero exit, the manager keeps serving, nothing half-made."""

from __future__ import annotations

import os

import msgpack
import pytest
import zmq

from tests.harness import our_processes


def assert_one_line_error(r, *needles: str, rc: int | None = None) -> None:
    assert r.rc != 0
    if rc is not None:
        assert r.rc == rc
    lines = r.err.strip().splitlines()
    assert len(lines) == 1, r.err
    for n in needles:
        assert n in lines[0], lines[0]


def assert_nothing_half_made(env, expected_ids: list[str]) -> None:
    assert env.ctl("ps").rc == 0  # still serving
    assert sorted(env.ok("ps", "-a", "-q").out.split()) == sorted(expected_ids)
    assert env.container_ids_on_disk() == sorted(expected_ids)
    shims_dir = os.path.join(env.state, "shims")
    assert sorted(os.listdir(shims_dir)) == sorted(expected_ids)
    assert len(env.shims()) == len(expected_ids)


@pytest.mark.parametrize("verb", [["inspect"], ["kill"], ["rm"], ["rm", "-f"], ["wait"], ["logs"], ["start"]])
def test_unknown_id(env, verb):
    r = env.ctl(*verb, "nosuch")
    assert_one_line_error(r, "no such container", "nosuch", rc=1)
    assert_nothing_half_made(env, [])


def test_duplicate_name(env):
    id = env.name("dup")
    env.ok("run", "-d", "--name", id, "busybox", "sleep", "1000")
    r = env.ctl("run", "-d", "--name", id, "busybox", "sleep", "1000")
    assert_one_line_error(r, "already in use", id, rc=125)
    assert_nothing_half_made(env, [id])
    assert env.inspect(id)["status"] == "running"  # the first one is unharmed


@pytest.mark.parametrize("bad", ["../x", "-x", ".hidden", "a/b", "x" * 65, "a b", ""])
def test_invalid_id(env, bad):
    r = env.ctl("run", "-d", f"--name={bad}", "busybox", "true") if bad else env.ctl("inspect", "")
    assert r.rc != 0
    assert len(r.err.strip().splitlines()) == 1
    assert "invalid container id" in r.err or "no such container" in r.err
    assert_nothing_half_made(env, [])
    assert not os.path.exists(os.path.join(env.root, "x"))


def test_missing_rootfs(env):
    r = env.ctl("run", "--rootfs", "/nonexistent/tree", "sh")
    assert_one_line_error(r, "/nonexistent/tree", "no such directory", rc=125)
    assert_nothing_half_made(env, [])


def test_rootfs_without_a_shell_fails_cleanly(env):
    empty = os.path.join(env.base, "empty")
    os.makedirs(empty)
    r = env.ctl("run", "--name", env.name("e"), "--rootfs", empty, "sh")
    assert r.rc == 127  # as docker: the command is not found
    assert len(r.err.strip().splitlines()) == 1 and '"sh": executable file not found' in r.err
    assert_nothing_half_made(env, [])


def test_unknown_image(env):
    r = env.ctl("run", "alpine", "true")
    assert_one_line_error(r, "no such image", "alpine", rc=125)
    assert_nothing_half_made(env, [])


def test_unknown_signal(env):
    id = env.name("sig")
    env.ok("run", "-d", "--name", id, "busybox", "sleep", "1000")
    for bad in ("SIGNOPE", "999", "0"):
        r = env.ctl("kill", "-s", bad, id)
        assert_one_line_error(r, "unknown signal", rc=1)
    assert env.inspect(id)["status"] == "running"
    assert_nothing_half_made(env, [id])


def test_kill_of_a_stopped_container_says_so(env):
    id = env.name("st")
    env.ctl("run", "--name", id, "busybox", "true")
    r = env.ctl("kill", id)
    assert_one_line_error(r, "cannot kill a stopped container", rc=1)


def test_run_without_image(env):
    r = env.ctl("run")
    assert_one_line_error(r, "IMAGE", rc=125)


def test_manager_not_running(bare_env):
    r = bare_env.ctl("ps")
    assert_one_line_error(r, "cannot connect", bare_env.sock, rc=125)


def test_malformed_frames_get_an_error_reply_and_the_manager_keeps_serving(env):
    ctx = zmq.Context()
    s = ctx.socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    s.setsockopt(zmq.RCVTIMEO, 5000)
    s.connect("ipc://" + env.sock)
    try:
        cases = [
            b"\xc1garbage",
            msgpack.packb([1, 2, 3]),
            msgpack.packb({"id": 1, "method": 5}),
            msgpack.packb({"id": 2, "method": "nosuch", "params": {}}),
            msgpack.packb({"id": 3, "method": "inspect", "params": {"id": 42}}),
            msgpack.packb({"id": 4, "method": "create", "params": {"args": "not-a-list", "image": "busybox"}}),
            msgpack.packb({"id": 5, "method": "kill", "params": "x"}),
        ]
        for frame in cases:
            s.send(frame)
            reply = msgpack.unpackb(s.recv())
            assert reply["error"]["code"] in ("invalid_argument", "not_found"), reply
        s.send_multipart([b"two", b"frames"])
        assert msgpack.unpackb(s.recv())["error"]["code"] == "invalid_argument"
    finally:
        s.close()
        ctx.term()
    assert_nothing_half_made(env, [])
    assert not [p for p in our_processes(env.base) if "shimd" in " ".join(p.cmdline()) and "start" in p.cmdline()]
