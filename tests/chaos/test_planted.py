"""Planted bugs: every chaos invariant is shown to fail, naming itself, when the system misbehaves in the way it
is there to catch (SHIMD_PLANT=<bug> for the manager and its shims; the bugs are listed in shimproto/plant.py).

Each test runs the smallest scenario that exercises its invariant with the chaos harness's own operations and
checks (a few seconds, not a round of kills), then takes the bug away and cleans up after it, so the test's
teardown judges only what the harness left. fault-point's test is the CI round.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable

import psutil
import pytest

from shimproto.client import Client
from tests.chaos import image_invariants, invariants, report, restartops
from tests.chaos.harness import Chaos
from tests.chaos.ops import Box, alive
from tests.harness import Env, wait_for

SETTLE = 3.0  # seconds a lagging view is given here (the round's 10 are for a loaded machine)


def _exiter(ch: Chaos, code: int = 7) -> Box:
    """A container that exits on its own with code; returned once its init is gone."""
    box = ch._create(ch._new_box("exiter", code), ["sh", "-c", f"sleep 0.2; exit {code}"])
    assert box.created == "yes", box.refusal
    wait_for(lambda: not alive(box.pid), 15, f"{box.id} to exit")
    return box


def _counter(ch: Chaos) -> Box:
    box = ch.op_run("counter")
    assert box.created == "yes", box.refusal
    return box


def _log_lines(box: Box, ch: Chaos, n: int) -> None:
    path = os.path.join(ch.env.root, "containers", box.id, "container.log")
    wait_for(lambda: os.path.exists(path) and open(path, "rb").read().count(b"\n") >= n, 20,
             f"{box.id} to log {n} lines")


def exits(ch: Chaos) -> None:
    _exiter(ch)
    ch.check()


def exec_code(ch: Chaos) -> None:
    box = _counter(ch)
    ch.op_exec(box)
    assert ch.execs, "the exec was not answered"
    ch.check()


def attach(ch: Chaos) -> None:
    """An attach across a manager restart: the page its repeated call gets holds every line printed meanwhile
    (pages of one line, the common case on an idle machine, are what the bug spares)."""
    box = _counter(ch)
    _log_lines(box, ch, 20)
    t = threading.Thread(target=ch.op_attach, args=(4.0,))
    t.start()
    wait_for(lambda: any("attach" in " ".join(p.cmdline()) for p in psutil.Process().children()), 10,
             "the attach to start")
    time.sleep(1.0)  # it is following (or about to): the restart lands under it
    ch.kill_manager()
    ch.start()
    t.join(60)
    assert ch.stats.attaches == 1


def log_lines(ch: Chaos) -> None:
    box = _counter(ch)
    _log_lines(box, ch, 150)  # past the first 4 KiB
    ch.check()


def failed_create(ch: Chaos) -> None:
    ch.set_runtime_faults(100, 0, 0)
    box = ch.op_run("counter")
    ch.set_runtime_faults(0, 0, 0)
    assert box.created == "failed", f"the create did not fail: {box.created}"
    ch.check()


def remove(ch: Chaos) -> None:
    box = _counter(ch)
    ch.check()
    ch.op_rm(box)
    assert box.removed == "yes"
    ch.check()


def restart(ch: Chaos) -> None:
    _counter(ch)
    ch.check()
    ch.kill_manager()
    ch.start()
    ch.check()


def commit_killed(ch: Chaos) -> None:
    """A commit whose manager dies between its pause and its resume; the call, sent again, then succeeds."""
    box = _counter(ch)
    ch.kill_manager()
    ch.start(fault="commit:paused")
    t = threading.Thread(target=ch.op_commit, args=(box,))
    t.start()
    assert ch.env.proc is not None and ch.env.proc.wait(30) == -signal.SIGKILL, "commit:paused not reached"
    ch.env.proc = None
    ch.start()
    t.join(60)
    ch.check()


def image_removed(ch: Chaos) -> None:
    img = ch.op_import(strict=True)
    ch.check()
    ch.op_rmi(img)
    assert img.removed == "yes"
    ch.check()


def fds(ch: Chaos) -> None:
    box = _counter(ch)
    ch.check()  # the shim's fds when first seen
    c = Client(ch.env.sock, timeout=30)
    try:
        for _ in range(invariants.FD_GROWTH + 4):
            c.call("inspect", {"id": box.id})
    finally:
        c.close()
    ch.check()


def crash_loop(ch: Chaos) -> None:
    """A container with --restart always that exits after 0.3 s: two restarts, a manager restart, a check."""
    box = ch.run_restarting("looper")
    assert box.created == "yes", box.refusal
    c = Client(ch.env.sock, timeout=30)
    try:
        wait_for(lambda: c.call("inspect", {"id": box.id})["run"] >= 3, 20, f"{box.id} to run a third time")
    finally:
        c.close()
    ch.kill_manager()
    ch.start()
    ch.check()


def hung_check(ch: Chaos) -> None:
    """A container whose health check hangs past its 0.5 s timeout, every second: checked once two of them could
    have overlapped (the second starts 1 s after the first was given up on, 5 s after its timeout)."""
    box = ch.run_restarting("hung")
    assert box.created == "yes", box.refusal
    time.sleep(9)
    ch.check()


# (bug, the invariant that must name it, what the finding must also say, the scenario)
CASES: list[tuple[str, str, str, Callable[[Chaos], None]]] = [
    ("drop-exit-event", invariants.EXIT_ONCE, "", exits),
    ("duplicate-exit-event", invariants.EXIT_ONCE, "2 exit events", exits),
    ("wrong-exit-code", invariants.EXIT_ONCE, "exit code 8", exits),
    ("wrong-exec-exit-code", invariants.EXEC_CODE, "expected", exec_code),
    ("lose-attach-line", invariants.ATTACH_LINES, "not consecutive", attach),
    ("repeat-log-line", invariants.LOG_LINES, "repeated", log_lines),
    ("failed-create-leaves-container", invariants.ALL_OR_NOTHING, "a create that failed", failed_create),
    ("stopped-containers-vanish", invariants.ALL_OR_NOTHING, "never removed, but no longer listed", exits),
    ("create-skips-start", invariants.LISTED_STATUS, "listed as 'created'", restart),
    ("remove-leaves-container", invariants.ALL_OR_NOTHING, "are left in its cgroups", remove),
    ("remove-leaves-container", invariants.NO_LEFTOVERS, "alive but the container is not listed", remove),
    ("leave-runtime-state", invariants.ALL_OR_NOTHING, "runtime state is left", remove),
    ("leave-runtime-state", invariants.ALL_OR_NOTHING, "cgroup is left", remove),
    ("restore-takes-shim-pid", invariants.KEEPS_RUNNING, "pid changed", restart),
    ("leak-shim-fd", invariants.NO_LEFTOVERS, "fds", fds),
    ("restore-leaves-commit-paused", invariants.LISTED_STATUS, "listed as 'paused'", commit_killed),
    ("restart-count-skips", restartops.RESTART_COUNT, "not 1, 2, 3", crash_loop),
    ("hung-check-not-killed", restartops.HEALTH_CHECK, "check processes at once", hung_check),
    ("image-gc-keeps-layers", image_invariants.IMAGE_STORE, "no listed image or container refers to it",
     image_removed),
]
IMAGE_BUGS = {"image-gc-keeps-layers"}  # their scenarios import an archive (made once per session)


@pytest.mark.timeout(180)
@pytest.mark.parametrize(("bug", "invariant", "says", "scenario"), CASES,
                         ids=[f"{b}-{i}" if [c[0] for c in CASES].count(b) > 1 else b for b, i, _, _ in CASES])
def test_a_planted_bug_fails_the_invariant_that_should_catch_it(bare_env: Env, bug: str, invariant: str,
                                                                says: str, scenario: Callable[[Chaos], None],
                                                                request: pytest.FixtureRequest):
    archive = request.getfixturevalue("chaos_archive") if bug in IMAGE_BUGS else ""
    ch = Chaos(bare_env, seed=1, plant=bug, settle=SETTLE, archive=archive)
    ch.start()
    try:
        scenario(ch)
    finally:
        clean_up_after_the_bug(ch)
    findings = [v.split(": ", 1)[1] for v in ch.stats.violations]
    named = [f for f in findings if f.startswith(f"{invariant}: ") and says in f]
    report.RESULTS.planted.append(report.Planted(bug, invariant, bool(named),
                                                 named[0] if named else "; ".join(findings) or "nothing"))
    print(f"{bug}: " + "\n  ".join(findings))
    assert named, f"SHIMD_PLANT={bug}: no {invariant} finding saying {says!r}; findings: {findings}"


def clean_up_after_the_bug(ch: Chaos) -> None:
    """A manager without the bug, then rm -f of everything it lists, then what no manager knows of any more
    (the shim and container a forgotten remove left, runtime state and cgroups a skipped `runc delete` left)."""
    ch.set_runtime_faults(0, 0, 0)
    ch.plant = ""
    ch.kill_manager()
    ch.start()
    ids = set(ch.boxes) | {x for x in bare_ids(ch.env)}
    if ids:
        ch.env.ctl("rm", "-f", *sorted(ids), timeout=120)
    base = ch.env.base
    for p in psutil.process_iter(["pid", "cmdline"]):
        cmd = p.info["cmdline"] or []
        if "start" in cmd and any("shimd" in a for a in cmd) and any(base in a for a in cmd):
            try:
                os.kill(p.info["pid"], signal.SIGKILL)
            except ProcessLookupError:
                pass
    runc_root = os.path.join(ch.env.state, "runc")
    for id in os.listdir(runc_root):
        subprocess.run(["runc", "--root", runc_root, "delete", "--force", id], capture_output=True, timeout=60)
    dirs, _ = invariants.cgroups_of(f"{ch.env.tag}-")
    for ds in dirs.values():
        for d in ds:
            try:
                os.rmdir(d)
            except OSError:
                pass


def bare_ids(env: Env) -> list[str]:
    r = env.ctl("ps", "-a", "-q", timeout=30)
    return r.out.split() if r.rc == 0 else []


def test_every_planted_bug_is_at_one_place_in_the_code_and_has_a_test():
    """shimproto/plant.py's promise (each name used at exactly one place) and this file's (each bug shown to be
    caught), checked rather than hoped for."""
    from shimproto.plant import NAMES

    uses = {name: 0 for name in NAMES}
    for top in ("shimd", "manager", "runtime", "shimproto"):
        for d, _, files in os.walk(os.path.join(os.path.dirname(__file__), "..", "..", top)):
            for f in files:
                if f.endswith(".py") and f != "plant.py":
                    text = open(os.path.join(d, f)).read()
                    for name in NAMES:
                        uses[name] += text.count(f'"{name}"')
    assert {n: k for n, k in uses.items() if k != 1} == {}, "planted bugs used at no place or at several"
    assert set(NAMES) == {c[0] for c in CASES}, "planted bugs without a test here"
