"""The chaos harness: a seeded, concurrent workload (run, exec, attach, kill, stop, rm; containers that log numbered
lines; containers that exit on their own with codes the harness chose) while the manager and shims are SIGKILLed, the
runtime fails or hangs, and the deterministic fault points fire. After every round the invariants are checked:

- every container that should run still runs, with the same PID;
- every exit is reported exactly once, with a code the container could have exited with (its own code, 128 +
  a signal the harness sent, 255 "shim-lost" when the harness killed its shim);
- every container ever created is fully there or fully gone (metadata, shim dir, shim process, runtime state);
- no zombie, no leaked shim, container process or mount; no growth of a shim's file descriptors;
- each numbered log holds every line once, in order (losses are counted only when the log reports dropped bytes).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field

import psutil

from shimproto.errors import DeadlineExceeded, NotFound, ShimdError, Unavailable
from shimproto.rpc import Client
from tests.harness import PY, REPO, Env, leftovers, our_processes, wait_for, zombies_of

MAX_LIVE = 30  # containers; past this, rounds remove instead of creating
SLAVE = ["unshare", "--mount", "--propagation", "slave", "--"]
FLAKY = os.path.join(os.path.dirname(os.path.abspath(__file__)), "flaky-runtime")
COUNTER = "i=0; while true; do echo \"n $i\"; i=$((i+1)); sleep 0.01; done"
TRAPPER = "trap 'exit 11' USR1; trap 'exit 12' USR2; while true; do sleep 0.05; done"


@dataclass
class Box:
    """What the harness knows of one container."""

    id: str
    kind: str  # counter, exiter, trapper, filler
    code: int | None = None  # the exiter's own code
    created: str = "maybe"  # yes, maybe (the create's answer was lost), failed
    removed: str = "no"  # no, maybe, yes
    pid: int = 0
    allowed: set[int] = field(default_factory=set)
    shim_killed: bool = False


@dataclass
class Stats:
    seed: int = 0
    rounds: int = 0
    manager_kills: int = 0
    slave_restarts: int = 0
    shim_kills: int = 0
    fault_points: dict[str, int] = field(default_factory=dict)
    containers: int = 0
    creates_failed: int = 0
    exits_checked: int = 0
    execs_checked: int = 0
    attaches: int = 0
    attach_lines_checked: int = 0
    log_lines_checked: int = 0
    log_bytes_dropped: int = 0
    violations: list[str] = field(default_factory=list)
    seconds: float = 0.0


class Chaos:
    def __init__(self, env: Env, seed: int, flaky: bool = True, disk_full: bool = False) -> None:
        self.disk_full = disk_full
        self.env = env
        self.rng = random.Random(seed)
        self.stats = Stats(seed=seed)
        self.boxes: dict[str, Box] = {}
        self.n = 0
        self.flaky = flaky
        self.ctl_file = os.path.join(env.base, "runtime.ctl")
        self.config = os.path.join(env.base, "config.toml")
        with open(self.config, "w") as f:
            f.write(f'runtime = "{FLAKY if flaky else "runc"}"\n[container]\nstop_timeout = 0.5\n')
        self.set_runtime_faults(0, 0, 0)
        self.gseq = 0
        self.events: list[dict] = []
        self.fd_base: dict[int, int] = {}
        self.lock = threading.Lock()
        self._pending: list[str] | None = None
        self.execs: list[tuple[Box, str, int]] = []
        self.dropped: dict[str, int] = {}  # per counter: bytes its log dropped (disk full)
        self.lines: dict[str, int] = {}  # per counter: lines found in its log
        self.exited: set[str] = set()  # containers whose exit was checked
        self.protected: set[str] = set()  # containers the random operations leave alone

    # --- manager control -----------------------------------------------------------------------------------

    def set_runtime_faults(self, fail_pct: int, hang_pct: int, hang_s: float) -> None:
        with open(self.ctl_file, "w") as f:
            f.write(f"{fail_pct} {hang_pct} {hang_s}\n")

    def start(self, slave: bool = False, fault: str = "", expect_death: bool = False) -> None:
        env = {"SHIMD_CHAOS_RUNTIME_CTL": self.ctl_file}
        if fault:
            env["SHIMD_FAULTS"] = fault
        if expect_death:  # dies during restore: do not wait for it to serve
            log = os.path.join(self.env.base, "manager-fault.log")
            with open(log, "ab") as f:
                p = subprocess.Popen([*(SLAVE if slave else []), PY, "-m", "manager", "--config", self.config,
                                      "--root", self.env.root, "--state", self.env.state], cwd=REPO, stdout=f,
                                     stderr=subprocess.STDOUT, env={**os.environ, **env})
            rc = p.wait(60)
            if rc != -signal.SIGKILL:
                self.violation(f"manager with fault {fault} exited {rc} instead of dying at the point")
            return
        self.env.start_manager("--config", self.config, wrap=SLAVE if slave else None, env=env)
        if slave:
            self.stats.slave_restarts += 1

    def kill_manager(self) -> None:
        if self.env.proc is not None:
            self.env.kill_manager(signal.SIGKILL)
            self.stats.manager_kills += 1

    def client(self) -> Client:
        return Client(self.env.sock, timeout=60)

    def violation(self, what: str) -> None:
        with self.lock:
            if self._pending is not None:
                self._pending.append(what)
            else:
                self.stats.violations.append(f"round {self.stats.rounds}: {what}")

    # --- operations (run in threads; a lost answer makes the outcome "maybe") ------------------------------

    def op_run(self, kind: str = "") -> Box:
        with self.lock:
            self.n += 1
            id = f"{self.env.tag}-{self.n}"
            kind = kind or self.rng.choice(["counter", "exiter", "exiter", "trapper"])
            code = self.rng.randrange(0, 120) if kind == "exiter" else None
            delay = round(self.rng.uniform(0.05, 4.0), 2)
            box = Box(id, kind, code, allowed={code} if code is not None else set())
            self.boxes[id] = box
            self.stats.containers += 1
        args = {"counter": ["sh", "-c", COUNTER], "trapper": ["sh", "-c", TRAPPER],
                "exiter": ["sh", "-c", f"echo start; sleep {delay}; exit {code}"]}[kind]
        c = self.client()
        try:
            info = c.call("create", {"id": id, "image": "busybox", "args": args, "start": True}, timeout=60)
            box.created, box.pid = "yes", info["pid"]
        except (Unavailable, DeadlineExceeded):
            box.created = "maybe"
        except ShimdError:
            box.created = "failed"  # refused cleanly (an injected runtime failure): must leave nothing
            self.stats.creates_failed += 1
        finally:
            c.close()
        return box

    def _pick(self, kinds: tuple[str, ...] = ("counter", "exiter", "trapper")) -> Box | None:
        with self.lock:
            live = [b for b in self.boxes.values() if b.created == "yes" and b.removed == "no" and b.kind in kinds
                    and b.id not in self.protected]
            return self.rng.choice(live) if live else None

    def op_fill_disk(self) -> Box:
        """A container that writes until the log's filesystem is full, then exits 0."""
        with self.lock:
            self.n += 1
            id = f"{self.env.tag}-{self.n}"
            box = Box(id, "filler", 0, allowed={0})
            self.boxes[id] = box
            self.stats.containers += 1
        c = self.client()
        try:
            c.call("create", {"id": id, "image": "busybox", "start": True,
                              "args": ["sh", "-c", "yes filling-the-log-filesystem | head -c 60000000"]}, timeout=60)
            box.created = "yes"
        except (Unavailable, DeadlineExceeded):
            box.created = "maybe"
        except ShimdError:
            box.created = "failed"
            self.stats.creates_failed += 1
        finally:
            c.close()
        return box

    def op_free_disk(self) -> None:
        with self.lock:
            fillers = [b for b in self.boxes.values() if b.kind == "filler" and b.created == "yes"
                       and b.removed == "no"]
        for b in fillers:
            b.allowed.add(137)
            b.removed = "maybe"
            try:
                self._call("delete", {"id": b.id, "force": True})
            finally:
                pass

    def op_signal(self) -> None:
        box = self._pick(("trapper", "counter", "exiter"))
        if box is None:
            return
        sig = self.rng.choice(["USR1", "USR2", "KILL"]) if box.kind == "trapper" else "KILL"
        box.allowed.add({"USR1": 11, "USR2": 12, "KILL": 137}[sig])
        self._call("kill", {"id": box.id, "signal": sig})

    def op_stop(self) -> None:
        box = self._pick()
        if box is not None:
            box.allowed.add(137)
            self._call("stop", {"id": box.id, "timeout": 0.3})

    def op_rm(self, box: Box | None = None) -> None:
        box = box or self._pick()
        if box is None:
            return
        box.allowed.add(137)
        box.removed = "maybe"
        try:
            c = self.client()
            try:
                c.call("delete", {"id": box.id, "force": True}, timeout=60)
                box.removed = "yes"
            finally:
                c.close()
        except NotFound:
            box.removed = "yes"
        except ShimdError:
            pass

    def op_exec(self) -> None:
        """Start a detached exec with a chosen code; check() verifies its exit after the next restart."""
        box = self._pick(("counter", "trapper"))
        if box is None:
            return
        with self.lock:
            code = self.rng.randrange(0, 100)
            exec_id = f"x{self.rng.randrange(1 << 30)}"
        try:
            c = self.client()
            try:
                c.call("exec", {"id": box.id, "exec_id": exec_id, "args": ["sh", "-c", f"sleep 0.2; exit {code}"],
                                "detach": True}, timeout=60)
                with self.lock:
                    self.execs.append((box, exec_id, code))
            finally:
                c.close()
        except ShimdError:
            pass  # the manager died, the container stopped or the runtime was told to fail: not a violation

    def op_attach(self) -> None:
        """`shimctl attach` to a counter for a moment (across a manager kill, when one comes): what it prints must
        be the counter's lines, consecutive, none twice, none skipped."""
        box = self._pick(("counter",))
        if box is None:
            return
        with self.lock:
            seconds = self.rng.uniform(0.3, 2.5)
        p = subprocess.Popen([PY, "-m", "shimctl", "--address", self.env.sock, "attach", "--no-stdin", box.id],
                             cwd=REPO, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        try:
            out, _ = p.communicate(timeout=seconds)
        except subprocess.TimeoutExpired:
            p.kill()
            out, _ = p.communicate()
        text = out.decode(errors="replace")
        lines = text.split("\n")[:-1]  # the last piece may be cut short by the kill
        numbers = []
        for line in lines:
            if not line.startswith("n ") or not line[2:].isdigit():
                self.violation(f"{box.id}: attach printed {line!r}")
                return
            numbers.append(int(line[2:]))
        if numbers and numbers != list(range(numbers[0], numbers[0] + len(numbers))):
            self.violation(f"{box.id}: attach lines not consecutive: {numbers[:3]}...{numbers[-3:]}")
        with self.lock:
            self.stats.attaches += 1
            self.stats.attach_lines_checked += len(numbers)

    def _check_execs(self, c: Client) -> None:
        pending, self.execs = self.execs, []
        for box, exec_id, code in pending:
            if box.removed != "no" or box.shim_killed:
                continue  # gone with its container or its shim
            try:
                res = c.call("wait", {"id": box.id, "exec_id": exec_id, "timeout": 10}, timeout=30)
            except ShimdError as e:
                self.violation(f"exec {exec_id} of {box.id}: wait failed: {e}")
                continue
            if not res["exited"]:
                self.execs.append((box, exec_id, code))  # still running (e.g. the container is paused)
            elif res["exit_code"] not in (code, 137):  # 137: the container died first and took it along
                self.violation(f"exec {exec_id} of {box.id} exited {res['exit_code']}, expected {code}")
            else:
                self.stats.execs_checked += 1

    def _call(self, method: str, params: dict) -> None:
        try:
            c = self.client()
            try:
                c.call(method, params, timeout=60)
            finally:
                c.close()
        except ShimdError:
            pass

    # --- rounds --------------------------------------------------------------------------------------------

    def round(self) -> None:
        self.stats.rounds += 1
        rng = self.rng
        if self.flaky:
            self.set_runtime_faults(*rng.choice([(0, 0, 0), (0, 0, 0), (15, 0, 0), (0, 10, 1.5)]))
        choices = [self.op_run, self.op_run, self.op_run, self.op_signal, self.op_stop, self.op_rm, self.op_exec,
                   self.op_attach]
        with self.lock:
            live = sum(b.created == "yes" and b.removed == "no" for b in self.boxes.values())
        if live > MAX_LIVE:  # a long soak is about kills, not about an ever larger population: remove, don't run
            choices = [self.op_rm if c == self.op_run else c for c in choices]
        ops = [rng.choice(choices) for _ in range(rng.randint(2, 5))]
        threads = [threading.Thread(target=op) for op in ops]
        for t in threads:
            t.start()
        time.sleep(rng.uniform(0.0, 1.2))
        self.kill_manager()
        for t in threads:
            t.join(120)
        if rng.random() < 0.15:
            self.kill_a_shim()
        self.set_runtime_faults(0, 0, 0)
        self.start(slave=rng.random() < 0.3)
        self.check()

    def fault_round(self, point: str) -> None:
        """Restart the manager armed with one fault point and make it reach the point."""
        self.stats.rounds += 1
        self.kill_manager()
        op, _ = point.split(":")
        if op == "restore":
            if not any(b.created == "yes" and b.removed == "no" for b in self.boxes.values()):
                self.start()
                self.op_run()
                self.kill_manager()
            self.start(fault=point, expect_death=True)
        else:
            target = None
            if op == "delete":  # a fresh long-running container, so that every delete point is on its path
                self.start()
                target = self.op_run("counter")
                self.kill_manager()
            self.start(fault=point)
            before = self.env.proc
            if target is None:
                self.op_run()
            elif target.created == "yes":
                self.op_rm(target)
            try:
                rc = before.wait(30)
            except subprocess.TimeoutExpired:
                rc = None
            if rc != -signal.SIGKILL:
                self.violation(f"fault point {point} was not reached (manager: {rc})")
                self.env.kill_manager(signal.SIGKILL)
            self.env.proc = None
        self.stats.fault_points[point] = self.stats.fault_points.get(point, 0) + 1
        self.stats.manager_kills += 1
        self.start()
        self.check()

    def kill_a_shim(self) -> None:
        box = self._pick()
        if box is None:
            return
        pid = _read_pid(os.path.join(self.env.state, "shims", box.id, "shim.pid"))
        if pid and _alive(pid):
            os.kill(pid, signal.SIGKILL)
            box.shim_killed = True
            box.allowed.add(255)
            self.stats.shim_kills += 1

    # --- invariants ----------------------------------------------------------------------------------------

    def _pull_events(self, c: Client) -> None:
        while batch := c.call("events", {"since": self.gseq, "timeout": 0})["events"]:
            self.events += batch
            self.gseq = batch[-1]["gseq"]

    def check(self, attempts: int = 4) -> None:
        """Check the invariants. What the manager reports trails reality by an event or two (an exit being
        processed), so a finding counts only if it is still there after a few seconds."""
        c = self.client()
        try:
            for i in range(attempts):
                self._pending = []
                self._check(c)
                found, self._pending = self._pending, None
                if not found:
                    return
                if i < attempts - 1:
                    time.sleep(1.0)  # the settling interval itself, not a wait for a known condition
            for what in found:
                self.violation(what)
        finally:
            c.close()

    def _check(self, c: Client) -> None:
        env = self.env
        if self._pending == []:  # first attempt of this check
            self._check_execs(c)
        # let exits that are happening settle into the event log before judging
        listing = {x["id"]: x for x in c.call("list", {"all": True})}
        self._pull_events(c)
        exits: dict[str, list[dict]] = {}
        for ev in self.events:
            if ev["type"] == "exit" and not ev["exec_id"]:
                exits.setdefault(ev["id"], []).append(ev)
        on_disk = set(env.container_ids_on_disk())
        shim_dirs = set(os.listdir(os.path.join(env.state, "shims")))
        runc_state = set(os.listdir(os.path.join(env.state, "runc")))
        shims = {}
        for p in our_processes(env.base):
            try:
                cmd = p.cmdline()
            except psutil.Error:
                continue
            if "shimd" in " ".join(cmd) and "start" in cmd:
                shims[cmd[cmd.index("--id") + 1]] = p.pid
        for id, box in self.boxes.items():
            present = id in listing
            if box.created == "failed" and present:
                self.violation(f"{id}: a create that failed left the container behind")
            if box.removed == "yes" and present:
                self.violation(f"{id}: removed but still listed")
            if not present:
                box.removed = "yes" if box.created == "yes" or box.removed != "no" else box.removed
                if box.created == "maybe":
                    box.created = "gone"
                for where, ids in (("metadata", on_disk), ("shim dir", shim_dirs), ("runtime state", runc_state),
                                   ("shim process", shims)):
                    if id in ids:
                        self.violation(f"{id}: not listed, but its {where} is left")
                if len(exits.get(id, [])) > 1:
                    self.violation(f"{id}: {len(exits[id])} exit events")
                continue
            box.created = "yes"
            x = listing[id]
            evs = exits.get(id, [])
            if x["status"] == "running":
                if box.pid and x["pid"] != box.pid:
                    self.violation(f"{id}: pid changed from {box.pid} to {x['pid']}")
                box.pid = box.pid or x["pid"]
                if not _alive(x["pid"]):
                    self.violation(f"{id}: listed running but pid {x['pid']} is gone")
                if id not in shims:
                    self.violation(f"{id}: running without a shim process")
                if evs:
                    self.violation(f"{id}: running but has exit events {evs}")
            elif x["status"] == "stopped":
                if len(evs) != 1:
                    self.violation(f"{id}: stopped with {len(evs)} exit events")
                code = x["exit_code"]
                if code not in box.allowed and not (code == 255 and box.shim_killed):
                    self.violation(f"{id}: exit code {code} ({x['exit_reason']}) not in {sorted(box.allowed)}")
                if evs and evs[0]["exit"]["code"] != code:
                    self.violation(f"{id}: exit event says {evs[0]['exit']['code']}, inspect says {code}")
                self.exited.add(id)
            if box.kind == "counter":
                try:
                    x = {**x, **c.call("inspect", {"id": id})}  # the shim's own count of dropped log bytes
                except ShimdError:
                    pass
                self._check_log(id, x)
        self.stats.exits_checked = len(self.exited)
        self.stats.log_lines_checked = sum(self.lines.values())
        self.stats.log_bytes_dropped = sum(self.dropped.values())
        # nothing of ours lives unaccounted for
        for id in shims:
            if id not in listing:
                self.violation(f"shim of {id} is alive but the container is not listed")
        for pid in shims.values():
            try:
                n = len(os.listdir(f"/proc/{pid}/fd"))
            except OSError:
                continue
            base = self.fd_base.setdefault(pid, n)
            if n > base + 8:
                self.violation(f"shim {pid} holds {n} fds, {base} when first seen")
        try:
            wait_for(lambda: not zombies_of(set(shims.values()) | {os.getpid()}), 10, "zombies to be reaped")
        except AssertionError:
            self.violation(f"zombies: {zombies_of(set(shims.values()) | {os.getpid()})}")
        for problem in leftovers(env.base):
            if problem.startswith("mount") and problem != f"mount left: {env.root}":  # the disk-full tmpfs
                self.violation(problem)

    def _check_log(self, id: str, x: dict) -> None:
        """Every line once, in order: n 0, n 1, ... With dropped bytes (disk full) gaps are allowed and counted,
        but still no line twice and none out of order."""
        path = x["log_path"]
        numbers = []
        for text in _cri_lines([*[f"{path}.{n}" for n in range(5, 0, -1)], path]):
            try:
                numbers.append(int(text.removeprefix("n ")))
            except ValueError:
                self.violation(f"{id}: log line {text!r} is not one the container wrote")
                return
        dropped = x.get("log_dropped_bytes", 0)
        if any(b <= a for a, b in zip(numbers, numbers[1:], strict=False)):
            self.violation(f"{id}: log lines repeated or out of order")
        elif not dropped and numbers != list(range(len(numbers))):
            gap = next((i for i, n in enumerate(numbers) if n != i), len(numbers))
            self.violation(f"{id}: log line {gap} missing with no bytes reported dropped")
        self.dropped[id] = dropped
        self.lines[id] = len(numbers)

    # --- the end -------------------------------------------------------------------------------------------

    def finish(self) -> None:
        c = self.client()
        try:
            ids = [x["id"] for x in c.call("list", {"all": True})]
        finally:
            c.close()
        if ids:
            r = self.env.ctl("rm", "-f", *ids, timeout=300)
            if r.rc != 0:
                self.violation(f"final rm -f failed: {r.err.strip()}")
        self.check()

    def report(self) -> str:
        s = self.stats
        return json.dumps({k: v for k, v in s.__dict__.items()}, indent=1, default=sorted)


def _cri_lines(paths: list[str]):
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


def _read_pid(path: str) -> int:
    try:
        return int(open(path).read().strip() or 0)
    except (OSError, ValueError):
        return 0


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False
