"""Restart policies and health checks in the chaos rounds: a small share of the operations run crash-looping
containers (`--restart always` on `sleep 0.3; exit 3`, `on-failure:2` on `sleep 0.2; exit 5`) and long-running ones
with a health check every second (one that passes, one that fails, one that hangs past its 0.5 s timeout), or
remove one of them; the manager is SIGKILLed under them as under any container, and now and then their shims
(tests/chaos/ops.py's kill_a_shim picks among them too). After every restart, invariants:

- restart-count: a container's restart_count never goes back (but when its shim was killed: the new incarnation a
  manager relaunches starts over, docs/architecture.md), and never exceeds the restarts its journal shows in the
  event stream; those restart events count 1, 2, 3... with no jump and no repeat, each after an exit; an
  on-failure:2 container never counts past 2;
- one-run: runs and exits alternate in the event stream (create, exit, create, exit...): no exit lost (two runs
  with no exit between them, or a stopped or restarting container whose last run has no exit) and none
  duplicated (two exits of one run); at most one init process of the container in its cgroup at a time;
- health-check: at most one check process in a container's cgroup at a time, and none once the container is not
  running (after rm nothing of it remains: all-or-nothing looks at its cgroup, shim and state as for any other).

Each run's exit code is checked by exit-once as any container's is (its own code, 137 after rm -f, 255 when the
harness killed its shim).
"""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tests.chaos.harness import Chaos
    from tests.chaos.invariants import View
    from tests.chaos.ops import Box

RESTART_COUNT = "restart-count"
ONE_RUN = "one-run"
HEALTH_CHECK = "health-check"

SECOND = 10**9
LOOP = "sleep 0.3; exit 3"
ONFAIL = "sleep 0.2; exit 5"
ONFAIL_MAX = 2
IDLE = "while true; do sleep 1; done"
RESTART_KINDS = {"looper": (LOOP, 3, "always"), "onfail": (ONFAIL, 5, f"on-failure:{ONFAIL_MAX}")}
# health kinds: the check's Test (its process's command line in the container is the probe's args)
CHECKS = {"healthy": ["CMD", "sleep", "0.2"], "sick": ["CMD-SHELL", "sleep 0.2; exit 1"],
          "hung": ["CMD", "sleep", "31"]}
PROBES = {"healthy": ["sleep", "0.2"], "sick": ["/bin/sh", "-c", "sleep 0.2; exit 1"], "hung": ["sleep", "31"]}
KINDS = (*RESTART_KINDS, *CHECKS)
WEIGHT = int(os.environ.get("CHAOS_RESTART_WEIGHT", "1"))  # its share of a round's choices (13 others)
MAX_LIVE = 4  # of these at once (a probe a second each costs a runc exec): past it, remove instead


class RestartOps:
    """Mixed into Chaos: crash loops and health checks, and their invariants."""

    lock: threading.Lock
    restart_seen: dict[str, tuple[int, int]]  # container id -> (incarnation, the largest restart_count seen)

    def restart_choices(self) -> list:
        return [self.op_run_restarting] * WEIGHT

    def op_run_restarting(self) -> Box | None:
        ch: Chaos = self  # type: ignore[assignment]
        with self.lock:
            live = [b for b in ch.boxes.values() if b.kind in KINDS and b.created == "yes" and b.removed == "no"
                    and b.id not in ch.protected]
            remove = len(live) >= MAX_LIVE or (live and ch.rng.random() < 0.25)
            kind = ch.rng.choice(KINDS)
        if live and ch.rng.random() < 0.2:  # its shim killed, in a back-off, a run or a check
            ch.kill_a_shim(KINDS)
        if remove:
            ch.op_rm(ch.rng.choice(live))
            return None
        return self.run_restarting(kind)

    def run_restarting(self, kind: str) -> Box:
        ch: Chaos = self  # type: ignore[assignment]
        if kind in RESTART_KINDS:
            script, code, policy = RESTART_KINDS[kind]
            box = ch._new_box(kind, code)
            with self.lock:
                ch.stats.restart_containers += 1
            return ch._create(box, ["sh", "-c", script], {"restart": policy})
        box = ch._new_box(kind, None)
        with self.lock:
            ch.stats.health_containers += 1
        check = {"Test": CHECKS[kind], "Interval": SECOND, "Timeout": SECOND // 2, "Retries": 2}
        return ch._create(box, ["sh", "-c", IDLE], {"healthcheck": check})


def _incarnation(events: list[dict]) -> tuple[int, list[dict]]:
    """How many incarnations of the container ended (a `delete`: a relaunch after its shim was lost), and the
    events of the current one."""
    ends = [i for i, ev in enumerate(events) if ev["type"] == "delete"]
    return len(ends), events[ends[-1] + 1:] if ends else events


def _cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [a.decode(errors="replace") for a in f.read().split(b"\0")[:-1]]
    except OSError:
        return []


def check(ch: Chaos, v: View) -> None:
    per_id: dict[str, list[dict]] = {}
    for ev in ch.events:
        if not ev.get("exec_id"):
            per_id.setdefault(ev["id"], []).append(ev)
    n = runs = 0
    for id, box in ch.boxes.items():
        if box.kind not in KINDS:
            continue
        n += 1
        incarnation, evs = _incarnation(per_id.get(id, []))
        x = v.listing.get(id)
        if box.kind in RESTART_KINDS:
            runs += _restart_count(ch, v, box, x, incarnation, evs)
        _one_run(ch, v, box, x, evs)
        _health(ch, v, box, x)
    ch.count(RESTART_COUNT, n)
    ch.count(ONE_RUN, runs + n)


def _restart_count(ch: Chaos, v: View, box: Box, x: dict | None, incarnation: int, evs: list[dict]) -> int:
    counts = [ev.get("count") for ev in evs if ev["type"] == "restart"]
    wrong = next((i for i, c in enumerate(counts) if c != i + 1), None)
    if wrong is not None:
        ch.violation(f"{RESTART_COUNT}: {box.id}: restart event {wrong + 1} counts {counts[wrong]}, not 1, 2, 3...")
    kinds = [ev["type"] for ev in evs if ev["type"] in ("exit", "restart")]
    if any(b == "restart" and a != "exit" for a, b in zip(["-", *kinds], kinds, strict=False)):
        ch.violation(f"{RESTART_COUNT}: {box.id}: a restart event with no exit before it ({kinds[:12]})")
    if box.kind == "onfail" and len(counts) > ONFAIL_MAX:
        ch.violation(f"{RESTART_COUNT}: {box.id}: on-failure:{ONFAIL_MAX} restarted {len(counts)} times")
    if x is None:
        return len(counts)
    count = x.get("restart_count", 0)
    seen_inc, seen = ch.restart_seen.get(box.id, (0, 0))
    if count < seen and seen_inc == incarnation and not box.shim_killed:
        ch.violation(f"{RESTART_COUNT}: {box.id}: restart_count went back from {seen} to {count}")
    if count > len(counts):  # (the events are taken after the listing: they may trail it only for a moment)
        v.unsettled.append(f"{RESTART_COUNT}: {box.id}: restart_count {count}, but the event stream shows "
                           f"{len(counts)} restarts")
    return len(counts)


def _one_run(ch: Chaos, v: View, box: Box, x: dict | None, evs: list[dict]) -> None:
    ends = [ev for ev in evs if ev["type"] in ("create", "exit")]
    runs = [ev["type"] for ev in ends]
    for i, (a, b) in enumerate(zip(runs, runs[1:], strict=False)):
        if a == b == "exit" and box.shim_killed and (ends[i + 1].get("exit") or {}).get("reason") == "shim-lost":
            continue  # the shim died in a back-off: the manager reports the loss as the container's last word
        if a == b == "exit":
            ch.violation(f"{ONE_RUN}: {box.id}: run {runs[:i + 1].count('create')} has two exit events")
        elif a == b == "create":
            ch.violation(f"{ONE_RUN}: {box.id}: run {runs[:i + 1].count('create')}'s exit is missing (another "
                         f"run began with no exit event between them)")
    if x is not None and x["status"] in ("stopped", "restarting") and runs and runs[-1] == "create":
        v.unsettled.append(f"{ONE_RUN}: {box.id}: {x['status']}, but the last run's exit is not in the event "
                           f"stream")
    init = ["sh", "-c", RESTART_KINDS[box.kind][0] if box.kind in RESTART_KINDS else IDLE]
    inits = [p for p in v.cgroup_procs.get(box.id, ()) if _cmdline(p) == init]
    if len(inits) > 1:
        v.unsettled.append(f"{ONE_RUN}: {box.id}: {len(inits)} init processes {sorted(inits)} in its cgroup")


def _health(ch: Chaos, v: View, box: Box, x: dict | None) -> None:
    if box.kind not in PROBES:
        return
    probes = [p for p in v.cgroup_procs.get(box.id, ()) if _cmdline(p) == PROBES[box.kind]]
    ch.stats.health_probes_seen += len(probes)
    if len(probes) > 1:
        v.unsettled.append(f"{HEALTH_CHECK}: {box.id}: {len(probes)} check processes at once {sorted(probes)}")
    if probes and (x is None or x["status"] != "running"):
        status = "not listed" if x is None else x["status"]
        v.unsettled.append(f"{HEALTH_CHECK}: {box.id}: {status}, but check processes {sorted(probes)} are left")
    ch.count(HEALTH_CHECK)


def learn(ch: Chaos, v: View) -> None:
    """The restart counts the settled view showed (the baseline they must not go back from); the report's sums."""
    per_id: dict[str, list[dict]] = {}
    health = restarts = 0
    for ev in ch.events:
        if ev["type"] == "health_status":
            health += 1
        elif ev["type"] == "restart":
            restarts += 1
        if not ev.get("exec_id"):
            per_id.setdefault(ev["id"], []).append(ev)
    ch.stats.restarts_seen, ch.stats.health_status_events = restarts, health
    for id, x in v.listing.items():
        box = ch.boxes.get(id)
        if box is None or box.kind not in RESTART_KINDS:
            continue
        incarnation, _ = _incarnation(per_id.get(id, []))
        seen_inc, seen = ch.restart_seen.get(id, (incarnation, 0))
        count = x.get("restart_count", 0)
        same = seen_inc == incarnation and not box.shim_killed  # (a lost shim's count may start over)
        ch.restart_seen[id] = (incarnation, max(count, seen) if same else count)
