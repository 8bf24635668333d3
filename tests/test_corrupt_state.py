"""Corrupt metadata never costs a running container (issue 14, point 3): a manager that restarts over a truncated,
invalid, missing or tampered meta.json keeps the shim and the container running, lists the container with a clear
status and the reason (naming the file), lets inspect and rm -f work on it, logs one line per file, and takes the
id from the directory name, never from the file."""

from __future__ import annotations

import json
import os
import signal

import psutil

from manager.store import Store


def _meta(env, id: str) -> str:
    return os.path.join(env.root, "containers", id, "meta.json")


def test_running_containers_with_unreadable_metadata_keep_running_and_can_be_removed(env):
    ids = [env.name(n) for n in ("trunc", "badjson", "gone", "tampered")]
    for id in ids:
        env.ok("run", "-d", "--name", id, "busybox", "sleep", "1000")
    before = {id: env.inspect(id) for id in ids}
    env.kill_manager(signal.SIGKILL)
    trunc, badjson, gone, tampered = ids
    with open(_meta(env, trunc), "r+b") as f:
        f.truncate(10)
    with open(_meta(env, badjson), "w") as f:
        f.write("{not json")
    os.unlink(_meta(env, gone))
    raw = json.load(open(_meta(env, tampered)))
    raw["spec"]["id"] = "../../../../tmp/shimd-escape"
    with open(_meta(env, tampered), "w") as f:
        json.dump(raw, f)
    env.start_manager()
    log = env.manager_log()
    for id in (trunc, badjson, gone):
        assert log.count(f"{_meta(env, id)} cannot be read") == 1, log
    rows = {c["id"]: c for c in env.ok("ps", "-a", "--format", "json").json()}
    assert set(rows) == set(ids)
    for id in ids:
        assert rows[id]["status"] == "running"
        assert psutil.pid_exists(before[id]["pid"]) and psutil.pid_exists(before[id]["shim_pid"])
    table = env.ok("ps").out
    for id in (trunc, badjson, gone):
        line = next(ln for ln in table.splitlines() if id in ln)
        assert "Up" in line and "(metadata unreadable)" in line, line
        assert _meta(env, id) in env.inspect(id)["metadata_error"]
    assert "metadata_error" not in env.inspect(tampered) and env.inspect(tampered)["id"] == tampered
    # a second restart changes nothing; the names stay taken
    env.kill_manager(signal.SIGKILL)
    env.start_manager()
    assert {c["id"] for c in env.ok("ps", "--format", "json").json()} == set(ids)
    assert "already in use" in env.ctl("run", "-d", "--name", trunc, "busybox", "true").err
    env.ok("rm", "-f", *ids)
    for id in ids:
        assert not psutil.pid_exists(before[id]["pid"]) or psutil.Process(before[id]["pid"]).status() == "zombie"
        assert not os.path.exists(os.path.join(env.root, "containers", id))
    assert not os.path.exists("/tmp/shimd-escape")
    assert env.ok("ps", "-a", "--format", "json").json() == []


def test_a_create_that_died_before_its_metadata_is_cleaned_and_a_damaged_one_keeps_every_layer(tmp_path):
    store = Store(str(tmp_path / "root"), str(tmp_path / "state"))
    os.makedirs(store.dir("half"))
    open(os.path.join(store.dir("half"), "meta.json.tmp.123"), "w").close()  # killed mid-write: nothing else
    os.makedirs(store.dir("broken"))
    with open(os.path.join(store.dir("broken"), "meta.json"), "w") as f:
        f.write("[")
    layers = tmp_path / "root" / "images" / "layers" / "sha256"
    os.makedirs(layers / "aaa")
    os.makedirs(layers / "bbb")
    lowers, _ = store.images_in_use()
    assert lowers == {str(layers / "aaa"), str(layers / "bbb")}  # whose layers "broken" runs on is unknown
    metas = store.load_all()
    assert [(m.id, bool(m.damaged)) for m in metas] == [("broken", True)]
    assert not os.path.exists(store.dir("half"))
