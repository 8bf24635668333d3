"""Live-restore with networks, each test in a network namespace of its own (tests/netns.py): published ports keep
answering while the manager is SIGKILLed and started again, a removal after a restart releases everything, a
manager killed at any step of a create or a delete leaves nothing once the next one has run, and create/rm cycles
with kills in between leave no lease, veth, rule or namespace pin."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import threading
import time

import pytest

from tests.harness import PY, REPO, wait_for
from tests.netns import BRIDGE, container_rules, fetch, leases, veths
from tests.test_manager import POINTS

pytestmark = pytest.mark.timeout(300)
RESTARTS = 10


def network_state(env) -> tuple[list, list, list]:
    return veths(env.netns), container_rules(env.netns), leases(env.base)


def serve(env, name: str, port: int) -> str:
    env.ok("run", "-d", "--name", name, "-p", f"{port}:80", "--tmpfs", "/www", "busybox", "sh", "-c",
           f"echo {name} > /www/index.html && exec httpd -f -p 80 -h /www")
    wait_for(lambda: (fetch(env.netns, f"http://127.0.0.1:{port}/") or "").strip() == name, 10, "the port")
    return name


def test_a_published_port_answers_every_request_while_the_manager_is_killed_ten_times(nenv):
    web = serve(nenv, nenv.name("web"), 8090)
    pid = nenv.inspect(web)["pid"]
    stop, results = threading.Event(), []

    def client() -> None:
        deadline = time.monotonic() + 240  # bounded whatever happens to the main thread
        while not stop.is_set() and time.monotonic() < deadline:
            results.append((fetch(nenv.netns, "http://127.0.0.1:8090/") or "").strip() == web)
            time.sleep(0.02)

    t = threading.Thread(target=client)
    t.start()
    try:
        for _ in range(RESTARTS):
            n = len(results)
            wait_for(lambda n=n: len(results) > n + 2, 30, "requests while the manager runs")
            assert nenv.kill_manager(signal.SIGKILL) == -signal.SIGKILL
            n = len(results)
            wait_for(lambda n=n: len(results) > n + 2, 30, "requests while no manager runs")
            nenv.start_manager()
    finally:
        stop.set()
        t.join(30)
    failed = results.count(False)
    print(f"{len(results)} requests across {RESTARTS} manager SIGKILLs, {failed} failed")
    assert failed == 0 and len(results) >= 4 * RESTARTS
    assert nenv.inspect(web)["pid"] == pid  # the same container all along
    before = network_state(nenv)
    assert len(before[0]) == 1 and len(before[2]) == 1
    nenv.ok("rm", "-f", web)  # by a manager that did not create it
    assert network_state(nenv) == ([], [], [])


@pytest.mark.parametrize("point", [p for p in POINTS if p.startswith(("create", "delete")) and p != "create:failed"])
def test_a_manager_killed_at_any_step_of_a_networked_create_or_delete_leaves_no_network_state(nenv, point):
    id = nenv.name("f")
    op = point.split(":")[0]
    if op == "delete":
        nenv.ok("run", "-d", "--name", id, "-p", "8091:80", "busybox", "sleep", "100000")
    nenv.kill_manager(signal.SIGTERM)
    nenv.start_manager(env={**BRIDGE, "SHIMD_FAULTS": point})
    if op == "create":
        rc = nenv.ctl_killing_the_manager("run", "-d", "--name", id, "-p", "8091:80", "busybox", "sleep", "100000")
    else:
        rc = nenv.ctl_killing_the_manager("rm", "-f", id)
    assert rc == -signal.SIGKILL, f"{point} was not reached"
    nenv.start_manager(env=BRIDGE)
    listed = nenv.ok("ps", "-a", "-q").out.split()
    if op == "delete":
        assert id not in listed  # the delete was carried forward
    if id in listed:  # a create kept for its client's repeat: it holds its network until removed
        assert len(veths(nenv.netns)) == 1
        nenv.ok("rm", "-f", id)
    assert network_state(nenv) == ([], [], [])
    nenv.ok("run", "-d", "--name", nenv.name("again"), "-p", "8091:80", "busybox", "sleep", "100")  # port free


CYCLES = int(os.environ.get("SHIMD_NET_CYCLES", "16"))  # the 200: SHIMD_NET_CYCLES=200 (about 10 min)


@pytest.mark.timeout(60 + 10 * CYCLES)
def test_create_and_rm_cycles_with_manager_kills_in_between_leave_nothing(nenv):
    """Each cycle publishes a port and is removed; a SIGKILL of the manager lands at a random moment of the
    create or of the rm in every other cycle (the client repeats its call with the same key, so the operation is
    finished or rolled back by the next manager). The fixture checks veths, rules, leases and pins at the end."""
    rnd = random.Random(12)
    for i in range(CYCLES):
        id = nenv.name(f"c{i}")
        killed = i % 2 == 1
        phase = "create" if i % 4 == 1 else "rm"
        args = ["run", "-d", "--name", id, "-p", f"{9000 + i}:80", "busybox", "sleep", "100000"]
        if killed and phase == "create":
            _with_a_kill(nenv, args, rnd.uniform(0.0, 0.4))
        else:
            nenv.ok(*args)
        if killed and phase == "rm":
            _with_a_kill(nenv, ["rm", "-f", id], rnd.uniform(0.0, 0.3))
        if id in nenv.ok("ps", "-a", "-q").out.split():
            nenv.ok("rm", "-f", id)
        assert network_state(nenv) == ([], [], []), f"cycle {i}"
    print(f"{CYCLES} cycles, {CYCLES // 2} with the manager killed midway")


def _with_a_kill(env, args: list[str], delay: float) -> None:
    """Run shimctl args while the manager is SIGKILLed after delay seconds and started again at once."""
    proc = subprocess.Popen([PY, "-m", "shimctl", "--address", env.sock, *args], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(delay)
    env.kill_manager(signal.SIGKILL)
    env.start_manager(env=BRIDGE)
    proc.wait(60)
