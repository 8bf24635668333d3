"""The chaos invariants, one function each, each with a short name that every finding of it starts with (the list
is in tests/chaos/harness.py's docstring; tests/chaos/test_planted.py shows each one failing on a planted bug).

Each takes the harness and a View: the manager's listing and event log, and what exists on the host (metadata,
shim dirs, runtime state, shim processes, cgroups and the processes in them, zombies, mounts). A finding no later
view can undo (a failed create left behind, a wrong exit code, a second exit event, a changed pid) is recorded
through `ch.violation` the moment a view shows it. Part of a view trails reality for a moment (an exit being
processed, a removed container's shim still exiting, a zombie about to be reaped): such a finding goes to
`view.unsettled`, the harness takes the view again while any is there, and records what is still there at its
deadline. Neither path changes what the harness believes about a container: `learn` does that once, from the last
view, after everything was recorded.

The view is gathered here, from /proc and /sys directly (not from the leak checks of tests/harness.py, which judge
a whole test at its end, not a container at a moment).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import psutil

from shimproto.client import Client
from shimproto.errors import ShimdError
from tests.chaos.restartops import RESTART_KINDS

if TYPE_CHECKING:
    from tests.chaos.harness import Chaos
    from tests.chaos.ops import Box

FD_GROWTH = 8  # a shim may hold a few more fds than when first seen (an exec's pipes), not more
CGROUP_ROOT = "/sys/fs/cgroup"

# the invariants' names, as their findings begin
KEEPS_RUNNING = "keeps-running"
LISTED_STATUS = "listed-status"
EXIT_ONCE = "exit-once"
EXEC_CODE = "exec-code"
ALL_OR_NOTHING = "all-or-nothing"
NO_LEFTOVERS = "no-leftovers"
LOG_LINES = "log-lines"
ATTACH_LINES = "attach-lines"
FAULT_POINT = "fault-point"


@dataclass
class View:
    listing: dict[str, dict]
    exits: dict[str, list[dict]]  # container id -> its init's exit events, in order
    metadata: set[str]
    shim_dirs: set[str]
    runtime_state: set[str]
    shims: dict[str, int]  # container id -> pid of a live shim process
    zombies: list[str]
    mounts: list[str]
    cgroups: dict[str, list[str]] = field(default_factory=dict)  # container id -> its cgroup dirs (every hierarchy)
    cgroup_procs: dict[str, set[int]] = field(default_factory=dict)  # container id -> processes in its cgroups
    parents: dict[int, int] = field(default_factory=dict)  # pid -> ppid of every live process
    unsettled: list[str] = field(default_factory=list)


def _names(d: str) -> list[str]:
    try:
        return os.listdir(d)
    except OSError:
        return []


def cgroup_roots() -> list[str]:
    """Where a container's cgroups are made: the v2 root on a v2-only host, else every mounted v1 hierarchy (and
    the v2 one of a hybrid host, /sys/fs/cgroup/unified)."""
    if os.path.exists(os.path.join(CGROUP_ROOT, "cgroup.controllers")):
        return [CGROUP_ROOT]
    try:
        names = sorted(os.listdir(CGROUP_ROOT))
    except OSError:
        return []
    return [os.path.join(CGROUP_ROOT, n) for n in names if os.path.isdir(os.path.join(CGROUP_ROOT, n))]


def cgroups_of(prefix: str) -> tuple[dict[str, list[str]], dict[str, set[int]]]:
    """The cgroup dirs (<root>/<parent>/<id>: shimd or shimd-<hash>) of every container whose id starts with
    prefix, and their processes."""
    dirs: dict[str, list[str]] = {}
    procs: dict[str, set[int]] = {}
    for parent in (os.path.join(r, n) for r in cgroup_roots() for n in _names(r)
                   if re.fullmatch(r"shimd(-[0-9a-f]{8})?", n)):
        try:
            names = os.listdir(parent)
        except OSError:
            continue
        for id in names:
            d = os.path.join(parent, id)
            if not id.startswith(prefix) or not os.path.isdir(d):
                continue
            dirs.setdefault(id, []).append(d)
            try:
                with open(os.path.join(d, "cgroup.procs")) as f:
                    procs.setdefault(id, set()).update(int(x) for x in f.read().split())
            except (OSError, ValueError):
                pass
    return dirs, {id: p for id, p in procs.items() if p}


def take_view(ch: Chaos, c: Client) -> View:
    listing = {x["id"]: x for x in c.call("list", {"all": True})}
    while batch := c.call("events", {"since": ch.gseq, "timeout": 0})["events"]:  # after the listing: an exit
        ch.events += batch  # listed as stopped is in the log by now
        ch.gseq = batch[-1]["gseq"]
    exits: dict[str, list[dict]] = {}
    for ev in ch.events:
        if ev["type"] == "exit" and not ev["exec_id"]:
            exits.setdefault(ev["id"], []).append(ev)
    base = ch.env.base
    shims, parents, zombie_of = {}, {}, {}
    for p in psutil.process_iter(["pid", "ppid", "cmdline", "status", "name"]):
        info = p.info
        if info["status"] == psutil.STATUS_ZOMBIE:
            zombie_of[info["pid"]] = (info["ppid"], info["name"])
            continue
        parents[info["pid"]] = info["ppid"]
        cmd = info["cmdline"] or []
        if "start" in cmd and "--id" in cmd and any("shimd" in a for a in cmd) and any(base in a for a in cmd):
            shims[cmd[cmd.index("--id") + 1]] = info["pid"]
    ours = set(shims.values()) | {os.getpid()}
    zombies = [f"zombie {pid} ({name}) of {ppid}" for pid, (ppid, name) in zombie_of.items() if ppid in ours]
    mounts = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            mp = line.split()[4]
            if mp.startswith(base) and not (ch.disk_full and mp == ch.env.root):  # the disk-full test's tmpfs
                mounts.append(f"mount left: {mp}")
    cgroups, cgroup_procs = cgroups_of(f"{ch.env.tag}-")
    state = ch.env.state
    return View(listing, exits, set(ch.env.container_ids_on_disk()), set(os.listdir(os.path.join(state, "shims"))),
                set(os.listdir(os.path.join(state, "runc"))), shims, zombies, mounts, cgroups, cgroup_procs,
                parents)


def running_containers_keep_running_with_the_same_pid(ch: Chaos, v: View) -> None:
    """keeps-running: a running container's pid never changes, is alive and is its init: a child of its shim."""
    for id, x in v.listing.items():
        if x["status"] != "running":
            continue
        box = ch.boxes.get(id)
        if box is not None and box.pid and x["pid"] != box.pid and box.kind not in RESTART_KINDS:
            ch.violation(f"{KEEPS_RUNNING}: {id}: pid changed from {box.pid} to {x['pid']}")
        if id not in v.shims:
            v.unsettled.append(f"{KEEPS_RUNNING}: {id}: running without a shim process")
        elif x["pid"] in v.parents and v.parents[x["pid"]] != v.shims[id]:
            v.unsettled.append(f"{KEEPS_RUNNING}: {id}: listed pid {x['pid']} is not a child of its shim "
                               f"{v.shims[id]} (its parent is {v.parents[x['pid']]})")


def listed_states_are_running_or_stopped(ch: Chaos, v: View) -> None:
    """listed-status: nothing the harness does pauses a container or leaves one created (but a create whose
    answer was lost, which may have stopped short of its start)."""
    for id, x in v.listing.items():
        box = ch.boxes.get(id)
        never_started = x["status"] == "created" and box is not None and box.answer_lost
        backing_off = x["status"] == "restarting" and box is not None and box.kind in RESTART_KINDS
        if x["status"] not in ("running", "stopped") and not never_started and not backing_off:
            v.unsettled.append(f"{LISTED_STATUS}: {id}: listed as {x['status']!r}, neither running nor stopped")


def exits_are_reported_once_with_a_possible_code(ch: Chaos, v: View) -> None:
    """exit-once: a container whose init is gone is stopped, with exactly one exit event, whose code is one the
    container could have exited with and the one inspect shows."""
    for id, evs in v.exits.items():
        if len(evs) > 1 and not _runs_again(ch, id):  # (one exit per run: one-run checks those)
            ch.violation(f"{EXIT_ONCE}: {id}: {len(evs)} exit events")
    for id, x in v.listing.items():
        evs, box = v.exits.get(id, []), ch.boxes.get(id)
        if x["status"] == "running" and evs and not _runs_again(ch, id):
            v.unsettled.append(f"{EXIT_ONCE}: {id}: running but has exit events {evs}")
        if x["status"] == "running" and x["pid"] not in v.parents:
            v.unsettled.append(f"{EXIT_ONCE}: {id}: listed running but pid {x['pid']} is gone: its exit was "
                               f"not reported")
        if x["status"] != "stopped":
            continue
        if not evs:
            v.unsettled.append(f"{EXIT_ONCE}: {id}: stopped with no exit event")
        code = x["exit_code"]
        if box is not None and code not in box.allowed and not (code == 255 and box.shim_killed):
            ch.violation(f"{EXIT_ONCE}: {id}: exit code {code} ({x['exit_reason']}) not in {sorted(box.allowed)}")
        if evs and evs[-1]["exit"]["code"] != code and not (_runs_again(ch, id) and len(evs) > 1):
            ch.violation(f"{EXIT_ONCE}: {id}: exit event says {evs[-1]['exit']['code']}, inspect says {code}")


def _runs_again(ch: Chaos, id: str) -> bool:
    """Has id a restart policy (runs again after an exit: an exit event per run, a new pid per run)?"""
    box = ch.boxes.get(id)
    return box is not None and box.kind in RESTART_KINDS


def exec_exits_have_their_own_codes(ch: Chaos, c: Client) -> None:
    """exec-code: every detached exec started since the last check (its exec call was answered): waited for, with
    a deadline of its own, and its code is its own (137 only when the harness killed its container meanwhile)."""
    pending, ch.execs = ch.execs, []
    for box, exec_id, code in pending:
        if box.removed != "no" or box.shim_killed:
            continue  # gone with its container or its shim
        try:
            res = c.call("wait", {"id": box.id, "exec_id": exec_id, "timeout": 10}, timeout=30)
        except ShimdError as e:
            ch.violation(f"{EXEC_CODE}: exec {exec_id} of {box.id}: wait failed: {e}")
            continue
        if not res["exited"]:
            ch.execs.append((box, exec_id, code))  # still running (e.g. the container is paused): next check
        elif res["exit_code"] != code and not (res["exit_code"] == 137 and _died_first(c, box)):
            ch.violation(f"{EXEC_CODE}: exec {exec_id} of {box.id} ({box.kind}, signals {sorted(box.allowed)}) "
                         f"exited {res['exit_code']}, expected {code}")
        else:
            ch.stats.execs_checked += 1
            ch.count(EXEC_CODE)


def _died_first(c: Client, box: Box) -> bool:
    """Did the exec's container die (and take the exec along: 137)? The harness killed it, or it is stopped
    (a trapper exits on its own when the harness sends it USR1 or USR2)."""
    if 137 in box.allowed:
        return True
    try:
        return c.call("inspect", {"id": box.id})["status"] != "running"
    except ShimdError:
        return True  # removed meanwhile


def every_container_is_all_there_or_all_gone(ch: Chaos, v: View) -> None:
    """all-or-nothing: a created container stays listed until it is removed, a failed create leaves nothing
    listed; a listed container has its metadata (and, running, its runtime state and cgroups), a stopped one no
    process in its cgroups; a container not listed has no metadata, shim dir, shim process, runtime state,
    cgroup or process in one."""
    for id, box in ch.boxes.items():
        listed = id in v.listing
        if listed and box.created == "failed":
            ch.violation(f"{ALL_OR_NOTHING}: {id}: a create that failed ({box.refusal}) left the container behind")
        if listed and box.removed == "yes":
            ch.violation(f"{ALL_OR_NOTHING}: {id}: removed but still listed")
        if not listed and box.created == "yes" and box.removed == "no":
            ch.violation(f"{ALL_OR_NOTHING}: {id}: created and never removed, but no longer listed")
    parts = (("metadata", v.metadata), ("shim dir", v.shim_dirs), ("runtime state", v.runtime_state),
             ("shim process", v.shims), ("cgroup", v.cgroups))
    for id in set(ch.boxes) | v.metadata | v.shim_dirs | v.runtime_state | set(v.shims) | set(v.cgroups):
        x = v.listing.get(id)
        if x is None:
            v.unsettled += [f"{ALL_OR_NOTHING}: {id}: not listed, but its {where} is left" for where, ids in parts
                            if id in ids]
            if id in v.cgroup_procs:
                v.unsettled.append(f"{ALL_OR_NOTHING}: {id}: not listed, but processes "
                                   f"{sorted(v.cgroup_procs[id])} are left in its cgroups")
            continue
        if id not in v.metadata:
            v.unsettled.append(f"{ALL_OR_NOTHING}: {id}: listed, but its metadata is missing")
        if x["status"] == "running":
            v.unsettled += [f"{ALL_OR_NOTHING}: {id}: running, but has no {where}" for where, ids in parts[2:]
                            if id not in ids and where != "shim process"]  # (keeps-running looks for the shim)
        if x["status"] == "stopped" and id in v.cgroup_procs:
            v.unsettled.append(f"{ALL_OR_NOTHING}: {id}: stopped, but processes {sorted(v.cgroup_procs[id])} are "
                               f"still in its cgroups")


def nothing_is_left_over(ch: Chaos, v: View) -> None:
    """no-leftovers: no zombie of a shim or of the harness, no mount under the test's dirs, no shim for a
    container that is not listed, no shim holding many more fds than when first seen."""
    v.unsettled += [f"{NO_LEFTOVERS}: shim of {id} is alive but the container is not listed" for id in v.shims
                    if id not in v.listing]
    v.unsettled += [f"{NO_LEFTOVERS}: {z}" for z in v.zombies] + [f"{NO_LEFTOVERS}: {m}" for m in v.mounts]
    for pid in v.shims.values():
        try:
            n = len(os.listdir(f"/proc/{pid}/fd"))
        except OSError:
            continue
        base = ch.fd_base.setdefault(pid, n)
        if n > base + FD_GROWTH:
            v.unsettled.append(f"{NO_LEFTOVERS}: shim {pid} holds {n} fds, {base} when first seen")


INVARIANTS = (running_containers_keep_running_with_the_same_pid, listed_states_are_running_or_stopped,
              exits_are_reported_once_with_a_possible_code, every_container_is_all_there_or_all_gone,
              nothing_is_left_over)


def count_checks(ch: Chaos, v: View) -> None:
    """What the settled view's checks covered, per invariant (the report's "checked" column)."""
    ch.count(KEEPS_RUNNING, sum(x["status"] == "running" for x in v.listing.values()))
    ch.count(LISTED_STATUS, len(v.listing))
    ch.count(EXIT_ONCE, len(v.listing) + sum(len(e) for e in v.exits.values()))
    ch.count(ALL_OR_NOTHING, len(ch.boxes))
    ch.count(NO_LEFTOVERS, len(v.shims) + 1)


def logs_hold_every_line_once_in_order(ch: Chaos, c: Client, v: View) -> None:
    """log-lines: every line once, in order: n 0, n 1, ... With dropped bytes (disk full) gaps are allowed and
    counted, but still no line twice and none out of order."""
    for id, x in v.listing.items():
        box = ch.boxes.get(id)
        if box is None or box.kind != "counter":
            continue
        try:
            x = {**x, **c.call("inspect", {"id": id})}  # the shim's own count of dropped log bytes
        except ShimdError:
            pass
        path, numbers = x["log_path"], []
        for text in _cri_lines([*[f"{path}.{n}" for n in range(5, 0, -1)], path]):
            if not text.startswith("n ") or not text[2:].isdigit():
                ch.violation(f"{LOG_LINES}: {id}: log line {text!r} is not one the container wrote")
                break
            numbers.append(int(text[2:]))
        else:
            dropped = x.get("log_dropped_bytes", 0)
            if any(b <= a for a, b in zip(numbers, numbers[1:], strict=False)):
                at = next(i for i, (a, b) in enumerate(zip(numbers, numbers[1:], strict=False)) if b <= a)
                ch.violation(f"{LOG_LINES}: {id}: log lines repeated or out of order (n {numbers[at + 1]} after "
                             f"n {numbers[at]})")
            elif not dropped and numbers != list(range(len(numbers))):
                gap = next((i for i, n in enumerate(numbers) if n != i), len(numbers))
                ch.violation(f"{LOG_LINES}: {id}: log line {gap} missing with no bytes reported dropped")
            ch.dropped[id] = dropped
            ch.lines[id] = len(numbers)


def learn(ch: Chaos, v: View) -> None:
    """What the last view settles about each container (after its findings were recorded)."""
    for id, box in ch.boxes.items():
        x = v.listing.get(id)
        if x is None:
            if box.removed != "no" or box.created == "yes":  # the latter was recorded as a violation
                box.removed = "yes"
            if box.created == "maybe":
                box.created = "gone"  # the create was undone
            continue
        if box.created == "maybe":
            box.created = "yes"
        if x["status"] == "running":
            box.pid = box.pid or x["pid"]
        elif x["status"] == "stopped":
            ch.exited.add(id)
    ch.stats.exits_checked = len(ch.exited)
    ch.stats.log_lines_checked = sum(ch.lines.values())
    ch.stats.log_bytes_dropped = sum(ch.dropped.values())
    ch.stats.checked[LOG_LINES] = ch.stats.log_lines_checked


def _cri_lines(paths: list[str]) -> Iterator[str]:
    """Joined lines of the CRI files, oldest first (stdout only; counters write nothing to stderr)."""
    partial = ""
    for p in paths:
        if not os.path.exists(p):
            continue
        with open(p, "rb") as f:
            for raw in f:
                parts = raw.rstrip(b"\n").split(b" ", 3)
                if len(parts) < 4:
                    continue
                text = partial + parts[3].decode(errors="replace")
                if parts[2] == b"P":
                    partial = text
                else:
                    partial = ""
                    yield text
    if partial:
        yield partial
