"""The chaos invariants, one function each (the list is in tests/chaos/harness.py's docstring).

Each takes the harness and a View: the manager's listing and event log, and what exists on the host (metadata,
shim dirs, runtime state, shim processes, zombies, mounts). A finding no later view can undo (a failed create left
behind, a wrong exit code, a second exit event, a changed pid) is recorded through `ch.violation` the moment a view
shows it. Part of a view trails reality for a moment (an exit being processed, a removed container's shim still
exiting, a zombie about to be reaped): such a finding goes to `view.unsettled`, the harness takes the view again
while any is there, and records what is still there at its deadline. Neither path changes what the harness
believes about a container: `learn` does that once, from the last view, after everything was recorded.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import psutil

from shimproto.client import Client
from shimproto.errors import ShimdError
from tests.chaos.ops import alive
from tests.harness import leftovers, our_processes, zombies_of

if TYPE_CHECKING:
    from tests.chaos.harness import Chaos

FD_GROWTH = 8  # a shim may hold a few more fds than when first seen (an exec's pipes), not more


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
    unsettled: list[str] = field(default_factory=list)


def take_view(ch: Chaos, c: Client) -> View:
    listing = {x["id"]: x for x in c.call("list", {"all": True})}
    while batch := c.call("events", {"since": ch.gseq, "timeout": 0})["events"]:  # after the listing: an exit
        ch.events += batch  # listed as stopped is in the log by now
        ch.gseq = batch[-1]["gseq"]
    exits: dict[str, list[dict]] = {}
    for ev in ch.events:
        if ev["type"] == "exit" and not ev["exec_id"]:
            exits.setdefault(ev["id"], []).append(ev)
    shims = {}
    for p in our_processes(ch.env.base):
        try:
            cmd = p.cmdline()
        except psutil.Error:
            continue
        if "shimd" in " ".join(cmd) and "start" in cmd:
            shims[cmd[cmd.index("--id") + 1]] = p.pid
    state = ch.env.state
    disk_full_tmpfs = f"mount left: {ch.env.root}"
    return View(listing, exits, set(ch.env.container_ids_on_disk()), set(os.listdir(os.path.join(state, "shims"))),
                set(os.listdir(os.path.join(state, "runc"))), shims,
                zombies_of(set(shims.values()) | {os.getpid()}),
                [p for p in leftovers(ch.env.base) if p.startswith("mount") and p != disk_full_tmpfs])


def running_containers_keep_running_with_the_same_pid(ch: Chaos, v: View) -> None:
    for id, x in v.listing.items():
        box = ch.boxes.get(id)
        never_started = x["status"] == "created" and box is not None and box.answer_lost
        if x["status"] not in ("running", "stopped") and not never_started:
            v.unsettled.append(f"{id}: listed as {x['status']!r}, neither running nor stopped")
        if x["status"] != "running":
            continue
        if box is not None and box.pid and x["pid"] != box.pid:
            ch.violation(f"{id}: pid changed from {box.pid} to {x['pid']}")
        if not alive(x["pid"]):
            v.unsettled.append(f"{id}: listed running but pid {x['pid']} is gone")
        if id not in v.shims:
            v.unsettled.append(f"{id}: running without a shim process")


def exits_are_reported_once_with_a_possible_code(ch: Chaos, v: View) -> None:
    for id, evs in v.exits.items():
        if len(evs) > 1:
            ch.violation(f"{id}: {len(evs)} exit events")
    for id, x in v.listing.items():
        evs, box = v.exits.get(id, []), ch.boxes.get(id)
        if x["status"] == "running" and evs:
            v.unsettled.append(f"{id}: running but has exit events {evs}")
        if x["status"] != "stopped":
            continue
        if not evs:
            v.unsettled.append(f"{id}: stopped with no exit event")
        code = x["exit_code"]
        if box is not None and code not in box.allowed and not (code == 255 and box.shim_killed):
            ch.violation(f"{id}: exit code {code} ({x['exit_reason']}) not in {sorted(box.allowed)}")
        if evs and evs[0]["exit"]["code"] != code:
            ch.violation(f"{id}: exit event says {evs[0]['exit']['code']}, inspect says {code}")


def exec_exits_have_their_own_codes(ch: Chaos, c: Client) -> None:
    """Every detached exec started since the last check: waited for (a deadline of its own), its code checked."""
    pending, ch.execs = ch.execs, []
    for box, exec_id, code in pending:
        if box.removed != "no" or box.shim_killed:
            continue  # gone with its container or its shim
        try:
            res = c.call("wait", {"id": box.id, "exec_id": exec_id, "timeout": 10}, timeout=30)
        except ShimdError as e:
            ch.violation(f"exec {exec_id} of {box.id}: wait failed: {e}")
            continue
        if not res["exited"]:
            ch.execs.append((box, exec_id, code))  # still running (e.g. the container is paused): next check
        elif res["exit_code"] not in (code, 137):  # 137: the container died first and took it along
            ch.violation(f"exec {exec_id} of {box.id} exited {res['exit_code']}, expected {code}")
        else:
            ch.stats.execs_checked += 1


def every_container_is_all_there_or_all_gone(ch: Chaos, v: View) -> None:
    for id, box in ch.boxes.items():
        listed = id in v.listing
        if listed and box.created == "failed":
            ch.violation(f"{id}: a create that failed ({box.refusal}) left the container behind")
        if listed and box.removed == "yes":
            ch.violation(f"{id}: removed but still listed")
        if not listed and box.created == "yes" and box.removed == "no":
            ch.violation(f"{id}: created and never removed, but no longer listed")
        parts = (("metadata", v.metadata), ("shim dir", v.shim_dirs), ("runtime state", v.runtime_state),
                 ("shim process", v.shims))
        if listed:
            v.unsettled += [f"{id}: listed, but its metadata is missing"] if id not in v.metadata else []
        else:
            v.unsettled += [f"{id}: not listed, but its {where} is left" for where, ids in parts if id in ids]


def nothing_is_left_over(ch: Chaos, v: View) -> None:
    v.unsettled += [f"shim of {id} is alive but the container is not listed" for id in v.shims
                    if id not in v.listing]
    v.unsettled += [f"zombie: {z}" for z in v.zombies] + v.mounts
    for pid in v.shims.values():
        try:
            n = len(os.listdir(f"/proc/{pid}/fd"))
        except OSError:
            continue
        base = ch.fd_base.setdefault(pid, n)
        if n > base + FD_GROWTH:
            v.unsettled.append(f"shim {pid} holds {n} fds, {base} when first seen")


INVARIANTS = (running_containers_keep_running_with_the_same_pid, exits_are_reported_once_with_a_possible_code,
              every_container_is_all_there_or_all_gone, nothing_is_left_over)


def logs_hold_every_line_once_in_order(ch: Chaos, c: Client, v: View) -> None:
    """Every line once, in order: n 0, n 1, ... With dropped bytes (disk full) gaps are allowed and counted, but
    still no line twice and none out of order."""
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
                ch.violation(f"{id}: log line {text!r} is not one the container wrote")
                break
            numbers.append(int(text[2:]))
        else:
            dropped = x.get("log_dropped_bytes", 0)
            if any(b <= a for a, b in zip(numbers, numbers[1:], strict=False)):
                ch.violation(f"{id}: log lines repeated or out of order")
            elif not dropped and numbers != list(range(len(numbers))):
                gap = next((i for i, n in enumerate(numbers) if n != i), len(numbers))
                ch.violation(f"{id}: log line {gap} missing with no bytes reported dropped")
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
