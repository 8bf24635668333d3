"""The shim's single reaper under load: 200 execs at once through the manager API, each exiting at a random moment
with its own code (a few killed by a signal) while other `runc` calls of the same shim are still running.

Every exit code must be the one that process chose (or 128 + the signal it was killed with), the shim must never
meet ECHILD (a second waiter stealing a status) nor log a traceback, and afterwards the shim has no zombie children
and no children at all but the container's init.

The random choices come from a seeded random.Random; the seed is printed, and SHIMD_STRESS_SEED=N replays a run.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import time

import psutil
import pytest
import zmq.asyncio

from shimproto.rpc import AsyncClient, Client
from tests.harness import wait_for, zombies_of

N_EXECS = 200
KILLED = [signal.SIGKILL, signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2]


def _plan(rng: random.Random) -> list[dict]:
    """One entry per exec: either exits by itself after a random sleep with a random code, or sleeps until it is
    killed with a signal."""
    killed_at = set(rng.sample(range(N_EXECS), len(KILLED)))
    sigs = list(KILLED)
    plan = []
    for n in range(N_EXECS):
        if n in killed_at:
            sig = sigs.pop()
            plan.append({"exec_id": f"k{n}", "args": ["sleep", "100000"], "signal": int(sig),
                         "expect": 128 + int(sig)})
        else:
            code = rng.randrange(0, 256)
            delay = rng.randrange(0, 500)  # milliseconds: 0 exits at once, long before the last exec starts
            # the marker file's mtime (in the writable layer, readable from the host) is when the process ended
            mark = f": > /tmp/exited.e{n}; exit {code}"
            script = mark if delay == 0 else f"sleep 0.{delay:03d}; {mark}"
            plan.append({"exec_id": f"e{n}", "args": ["sh", "-c", script], "signal": 0, "expect": code})
    return plan


async def _storm(sock: str, id: str, plan: list[dict]) -> tuple[list[dict], int]:
    ctx = zmq.asyncio.Context()
    c = AsyncClient(ctx, sock, "the manager", timeout=60.0)
    done = asyncio.Event()
    side_calls = 0

    async def other_runc_calls() -> None:
        # top = `runc ps`, stats = `runc events --stats`: more runc children of the shim, started and reaped
        # while execs are starting and exiting around them
        nonlocal side_calls
        while not done.is_set():
            await asyncio.gather(c.call("top", {"id": id}, timeout=120), c.call("stats", {"id": id}, timeout=120))
            side_calls += 2

    async def one(entry: dict) -> dict:
        started = await c.call("exec", {"id": id, "exec_id": entry["exec_id"], "args": entry["args"],
                                        "detach": True}, timeout=120)
        assert started["exec_id"] == entry["exec_id"] and started["pid"] > 0, started
        if entry["signal"]:
            await c.call("kill", {"id": id, "exec_id": entry["exec_id"], "signal": entry["signal"]}, timeout=60)
        while True:
            res = await c.call("wait", {"id": id, "exec_id": entry["exec_id"], "timeout": 20}, timeout=60)
            if res["exited"]:
                break
        return {**entry, "started_at": started["started_at"], "code": res["exit_code"], "exit": res["exit"]}

    side = asyncio.create_task(other_runc_calls())
    try:
        results = await asyncio.gather(*(one(e) for e in plan), return_exceptions=True)
    finally:
        done.set()
        try:
            await side
        finally:
            c.close()
            ctx.term()
    return results, side_calls  # type: ignore[return-value]


def _markers(root: str) -> dict[str, int]:
    """mtime of every exit marker the execs wrote (they are in the container's writable layer, under root)."""
    out = {}
    for d, _, files in os.walk(root):
        for f in files:
            if f.startswith("exited.e"):
                out[f] = os.stat(os.path.join(d, f)).st_mtime_ns
    return out


@pytest.mark.timeout(300)
def test_200_concurrent_execs_each_get_their_own_exit_code(env):
    seed = int(os.environ.get("SHIMD_STRESS_SEED", time.time_ns() % 2**32))
    print(f"\nreaper stress seed: {seed} (replay with SHIMD_STRESS_SEED={seed})")
    rng = random.Random(seed)
    plan = _plan(rng)

    id = env.name("storm")
    env.ok("run", "-d", "--name", id, "busybox", "sleep", "100000")
    info = env.inspect(id)
    init_pid, shim_pid = info["pid"], info["shim_pid"]
    shim_log = os.path.join(env.state, "shims", id, "shim.log")

    t0 = time.monotonic()
    results, side_calls = asyncio.run(_storm(env.sock, id, plan))
    wall = time.monotonic() - t0
    print(f"reaper stress: {N_EXECS} execs ({len(KILLED)} killed by a signal) and {side_calls} concurrent "
          f"top/stats calls in {wall:.1f}s")

    errors = [f"{e['exec_id']} {e['args']}: {type(r).__name__}: {r}" for e, r in zip(plan, results, strict=True)
              if isinstance(r, BaseException)]
    assert not errors, f"seed {seed}: {len(errors)} execs failed:\n  " + "\n  ".join(errors[:20])
    wrong = [f"{r['exec_id']} {r['args']}: expected {r['expect']}, got {r['code']} ({r['exit']})"
             for r in results if r["code"] != r["expect"]]
    assert not wrong, f"seed {seed}: wrong exit codes:\n  " + "\n  ".join(wrong)
    for r in results:
        if r["signal"]:
            assert r["exit"]["signal"] == r["signal"], r
        else:
            assert r["exit"]["signal"] is None, r

    # the storm really overlapped: execs ended while other execs' `runc exec` had not even returned
    marks = _markers(env.root)
    ended = sorted(marks[f"exited.{r['exec_id']}"] for r in results if not r["signal"])
    starts = sorted(r["started_at"] for r in results)
    early = sum(1 for t in ended if t < starts[-1])
    print(f"reaper stress: {early} execs ended before the last exec was started; started over "
          f"{(starts[-1] - starts[0]) / 1e9:.2f}s, ended over {(ended[-1] - ended[0]) / 1e9:.2f}s")
    assert early > 0, "no exec ended before the last one was started: the storm did not overlap"

    # the container and its shim are unharmed
    after = env.inspect(id)
    assert (after["status"], after["pid"], after["shim_pid"]) == ("running", init_pid, shim_pid)
    assert len(after["execs"]) == N_EXECS and all(e["status"] == "stopped" for e in after["execs"])

    log = open(shim_log, errors="replace").read()
    for bad in ("ECHILD", "ChildProcessError", "No child processes", "Traceback"):
        assert bad not in log, f"seed {seed}: {bad!r} in the shim log:\n{log[-4000:]}"
    assert "Traceback" not in env.manager_log(), env.manager_log()[-4000:]

    wait_for(lambda: not zombies_of({shim_pid}), 10, "the shim to have no zombie children")

    def children() -> list[tuple[int, str, str]]:
        out = []
        for p in psutil.Process(shim_pid).children():
            try:
                out.append((p.pid, p.status(), " ".join(p.cmdline())))
            except psutil.NoSuchProcess:
                continue
        return out

    try:
        wait_for(lambda: [pid for pid, _, _ in children()] == [init_pid], 10,
                 "the shim's only child to be the container init")
    except AssertionError:
        raise AssertionError(f"children of the shim {shim_pid} besides the init {init_pid}: {children()}") \
            from None
    assert not zombies_of({shim_pid})
    # nothing is left over inside the container either: only its init
    c = Client(env.sock)
    try:
        assert [p["pid"] for p in c.call("top", {"id": id})] == [init_pid]  # type: ignore[union-attr]
    finally:
        c.close()
