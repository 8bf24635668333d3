"""Probes of issue 14 that stay in CI: what one client can make a manager hold (point 7), odd input that once got
a traceback or an internal error (point 6), crafted ids over the raw API."""

from __future__ import annotations

import os
import time

import msgpack
import psutil
import zmq

from shimproto.rpc import MAX_PENDING
from shimproto.wire import MAX_CONTAINERS


def _dealer(env) -> tuple[zmq.Context, zmq.Socket]:
    ctx = zmq.Context()
    s = ctx.socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    s.setsockopt(zmq.RCVTIMEO, 30_000)
    s.connect(f"ipc://{env.sock}")
    return ctx, s


def _rss_mib(pid: int) -> float:
    return psutil.Process(pid).memory_info().rss / 2**20


def test_a_frame_of_a_million_empty_maps_is_refused_without_the_memory_it_would_take(env):
    before = _rss_mib(env.manager_pid())
    ctx, s = _dealer(env)
    try:
        body = msgpack.packb({"id": 1, "method": "list", "params": {"x": [{}] * 3_000_000}})
        assert 2_000_000 < len(body) < 8 * 2**20
        s.send(body)
        reply = msgpack.unpackb(s.recv(), raw=False)
    finally:
        ctx.destroy(0)
    assert reply["id"] is None or reply["id"] == 1
    assert reply["error"]["code"] == "invalid_argument"
    assert f"more than {MAX_CONTAINERS} maps and arrays" in reply["error"]["message"]
    assert _rss_mib(env.manager_pid()) - before < 60  # it took ~200 MiB before the bound
    assert env.ok("ps").rc == 0


def test_calls_in_flight_are_capped_per_connection_and_the_manager_keeps_serving(env):
    id = env.name("waited")
    env.ok("run", "-d", "--name", id, "busybox", "sleep", "1000")
    before = _rss_mib(env.manager_pid())
    ctx, s = _dealer(env)
    try:
        n = MAX_PENDING + 200
        for rid in range(n):  # long polls that would each wait 30 s
            s.send(msgpack.packb({"id": rid, "method": "wait", "params": {"id": id, "timeout": 30}}))
        refused = []
        deadline = time.monotonic() + 30
        while len(refused) < 200 and time.monotonic() < deadline:
            reply = msgpack.unpackb(s.recv(), raw=False)
            if "error" in reply:
                refused.append(reply)
        assert len(refused) == 200 and all(r["error"]["code"] == "unavailable" for r in refused)
        assert f"long polls in flight on this connection (at most {MAX_PENDING})" in refused[0]["error"]["message"]
        assert min(r["id"] for r in refused) >= MAX_PENDING  # the first MAX_PENDING were taken
        # another connection is served meanwhile, and memory stays bounded
        assert env.ok("ps").rc == 0
        assert _rss_mib(env.manager_pid()) - before < 60
    finally:
        ctx.destroy(0)
    env.ok("rm", "-f", id)


def test_odd_numbers_and_paths_get_one_clear_line(env, tmp_path):
    comma = tmp_path / "a,b"
    comma.mkdir()
    for args, want in ((["--memory", "99999999999999999999"], "memory limit"),
                       (["--pids-limit", "99999999999999999999"], "pids limit"),
                       (["--rootfs", str(comma)], "overlay cannot take a path with")):
        r = env.ctl("run", "-d", *args, *([] if "--rootfs" in args else ["busybox"]), "true")
        assert r.rc == 125 and want in r.err and len(r.err.strip().splitlines()) == 1, (args, r.err)
        assert "Traceback" not in r.err


def test_crafted_ids_over_the_raw_api_write_nothing_outside(env):
    ctx, s = _dealer(env)
    try:
        for rid, bad in enumerate(["../../etc", "/abs", "a/b", "", ".hidden", "x" * 65, "a\x00b"]):
            for method in ("inspect", "delete", "kill", "wait", "logs"):
                s.send(msgpack.packb({"id": rid, "method": method, "params": {"id": bad, "force": True}}))
                reply = msgpack.unpackb(s.recv(), raw=False)
                assert reply["error"]["code"] in ("invalid_argument", "not_found"), (method, bad, reply)
    finally:
        ctx.destroy(0)
    assert sorted(os.listdir(os.path.join(env.root, "containers"))) == []
