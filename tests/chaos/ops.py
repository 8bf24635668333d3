"""The chaos workload's operations. They run in threads while the manager is killed under them. The client sends
a call again to the next manager (a changing one with its key, answered with the first call's outcome), so an
operation normally gets its real answer; only when none comes within the call's deadline is the outcome "maybe"
(created, removed), and then the invariants accept either."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from random import Random

import psutil

from manager.registry import read_pid
from shimproto.client import Client
from shimproto.errors import DeadlineExceeded, NotFound, ShimdError, Unavailable
from tests.chaos.restartops import CHECKS, RESTART_KINDS
from tests.harness import PY, REPO, Env

ATTACH_PATIENCE = 30.0  # seconds an attach to a running counter may take to print its first line
COUNTER = "i=0; while true; do echo \"n $i\"; i=$((i+1)); sleep 0.01; done"
TRAPPER = "trap 'exit 11' USR1; trap 'exit 12' USR2; while true; do sleep 0.05; done"
FILLER = "yes filling-the-log-filesystem | head -c 60000000"


@dataclass
class Box:
    """What the harness knows of one container."""

    id: str
    kind: str  # counter, exiter, trapper, filler
    code: int | None = None  # the exiter's own code
    created: str = "maybe"  # yes, maybe (the create's answer was lost), failed, gone (a maybe that was undone)
    removed: str = "no"  # no, maybe, yes
    pid: int = 0
    allowed: set[int] = field(default_factory=set)
    shim_killed: bool = False
    answer_lost: bool = False  # the create's answer never came: it may have stopped short of its start
    refusal: str = ""  # why the create failed, when it did


@dataclass
class Stats:
    seed: int = 0
    rounds: int = 0
    manager_kills: int = 0
    kills_in_flight: int = 0  # SIGKILLs that landed while at least one operation was under way
    kills_at_fault_points: int = 0  # the manager killed itself at an armed fault point
    kills_idle: int = 0  # SIGKILLs of a manager no operation was waiting on
    slave_restarts: int = 0
    shim_kills: int = 0
    template_kills: int = 0
    spare_kills: int = 0
    fault_points: dict[str, int] = field(default_factory=dict)
    containers: int = 0
    creates_failed: int = 0
    exits_checked: int = 0
    execs_checked: int = 0
    attaches: int = 0
    attach_lines_checked: int = 0
    log_lines_checked: int = 0
    log_bytes_dropped: int = 0
    image_imports: int = 0
    image_commits: int = 0
    image_removals: int = 0
    kills_in_image_ops: int = 0  # manager SIGKILLs that landed while an image operation was under way
    web_containers: int = 0  # on the bridge network, a published port (tests/chaos/netops.py)
    kills_in_network_ops: int = 0  # manager SIGKILLs that landed while a web container was created or removed
    restart_containers: int = 0  # with a restart policy, crash-looping (tests/chaos/restartops.py)
    health_containers: int = 0  # with a health check that passes, fails or hangs
    restarts_seen: int = 0  # restart events in the manager's event stream
    health_status_events: int = 0
    restart_shim_kills: int = 0  # shim SIGKILLs of those (a lost shim's always container is relaunched)
    health_probes_seen: int = 0  # check processes found in containers' cgroups (at most one each at a time)
    known_masquerade_left: set[str] = field(default_factory=set)  # bridge's chains of the known gap
    violations: list[str] = field(default_factory=list)
    checked: dict[str, int] = field(default_factory=dict)  # invariant -> how many things it checked
    seconds: float = 0.0


def create_params(id: str, args: list[str], spec: dict | None = None) -> dict:
    """The manager's create request for a busybox container started at once (spec: more of its fields)."""
    return {"spec": {"id": id, "image": "busybox", "args": args, **(spec or {})}, "start": True}


class Ops:
    """Mixed into Chaos: the operations, each safe to run in a thread."""

    env: Env
    rng: Random
    lock: threading.Lock
    boxes: dict[str, Box]
    protected: set[str]
    execs: list[tuple[Box, str, int]]
    n: int
    stats: Stats

    def client(self) -> Client:
        return Client(self.env.sock, timeout=60)

    def violation(self, what: str) -> None:
        raise NotImplementedError

    def _call(self, method: str, params: dict) -> None:
        try:
            c = self.client()
            try:
                c.call(method, params, timeout=60)
            finally:
                c.close()
        except ShimdError:
            pass

    def _new_box(self, kind: str, code: int | None) -> Box:
        with self.lock:
            self.n += 1
            box = Box(f"{self.env.tag}-{self.n}", kind, code, allowed={code} if code is not None else set())
            self.boxes[box.id] = box
            self.stats.containers += 1
        return box

    def _create(self, box: Box, args: list[str], spec: dict | None = None) -> Box:
        c = self.client()
        try:
            info = c.call("create", create_params(box.id, args, spec), timeout=60)
            box.created, box.pid = "yes", info["pid"]
        except (Unavailable, DeadlineExceeded):
            box.created, box.answer_lost = "maybe", True
        except ShimdError as e:
            box.created = "failed"  # refused cleanly (an injected runtime failure): must leave nothing
            box.refusal = f"{type(e).__name__}: {e}"
            self.stats.creates_failed += 1
        finally:
            c.close()
        return box

    def op_run(self, kind: str = "") -> Box:
        with self.lock:
            kind = kind or self.rng.choice(["counter", "exiter", "exiter", "trapper"])
            code = self.rng.randrange(0, 120) if kind == "exiter" else None
            delay = round(self.rng.uniform(0.05, 4.0), 2)
        box = self._new_box(kind, code)
        args = {"counter": ["sh", "-c", COUNTER], "trapper": ["sh", "-c", TRAPPER],
                "exiter": ["sh", "-c", f"echo start; sleep {delay}; exit {code}"],
                "missing": ["no-such-command"]}[kind]  # a create that fails (127): it must leave nothing
        return self._create(box, args)

    def op_fill_disk(self) -> Box:
        """A container that writes until the log's filesystem is full, then exits 0."""
        return self._create(self._new_box("filler", 0), ["sh", "-c", FILLER])

    def _pick(self, kinds: tuple[str, ...] = ("counter", "exiter", "trapper", "web")) -> Box | None:
        with self.lock:
            live = [b for b in self.boxes.values() if b.created == "yes" and b.removed == "no" and b.kind in kinds
                    and b.id not in self.protected]
            return self.rng.choice(live) if live else None

    def op_free_disk(self) -> None:
        with self.lock:
            fillers = [b for b in self.boxes.values() if b.kind == "filler" and b.created == "yes"
                       and b.removed == "no"]
        for b in fillers:
            b.allowed.add(137)
            b.removed = "maybe"
            self._call("delete", {"id": b.id, "force": True})

    def op_signal(self) -> None:
        box = self._pick(("trapper", "counter", "exiter"))
        if box is None:
            return
        sig = self.rng.choice(["USR1", "USR2", "KILL"]) if box.kind == "trapper" else "KILL"
        box.allowed.add({"USR1": 11, "USR2": 12, "KILL": 137}[sig])
        self._call("kill", {"id": box.id, "signal": sig})

    def op_stop(self, box: Box | None = None) -> None:
        box = box or self._pick()
        if box is not None:
            box.allowed.add(137)
            self._call("stop", {"id": box.id, "timeout": 0.3})

    def op_rm(self, box: Box | None = None) -> None:
        box = box or self._pick()
        if box is None:
            return
        box.allowed.add(137)
        box.removed = "maybe"
        if box.kind == "web":
            self._net_op(lambda: self._delete(box))  # type: ignore[attr-defined]
        else:
            self._delete(box)

    def _delete(self, box: Box) -> None:
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

    def op_exec(self, box: Box | None = None) -> None:
        """Start a detached exec with a chosen code; the next check waits for it and checks its code."""
        box = box or self._pick(("counter", "trapper"))
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

    def op_attach(self, seconds: float = 0.0) -> None:
        """`shimctl attach` to a counter for a moment (across a manager kill, when one comes), then detach by
        killing it: what it printed must be the counter's lines, consecutive, none twice, none skipped, at least
        one (it waits up to ATTACH_PATIENCE seconds for the first), nothing on stderr. An attach that ends on its
        own must exit with the container's code; one that fails must have a reason (the container was stopped,
        killed or removed by another operation, or its shim was killed)."""
        box = self._pick(("counter",))
        if box is None:
            return
        with self.lock:
            seconds = seconds or self.rng.uniform(0.3, 2.5)
        p = subprocess.Popen([PY, "-m", "shimctl", "--address", self.env.sock, "attach", "--no-stdin", box.id],
                             cwd=REPO, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        out: list[bytes] = []
        err: list[bytes] = []
        readers = [threading.Thread(target=lambda: out.extend(iter(p.stdout.readline, b""))),  # type: ignore
                   threading.Thread(target=lambda: err.append(p.stderr.read()))]  # type: ignore[union-attr]
        for t in readers:
            t.start()
        t0 = time.monotonic()
        while p.poll() is None:
            waited = time.monotonic() - t0
            if (waited > seconds and len(out) > 1) or waited > ATTACH_PATIENCE:  # a whole line, and one more
                break
            time.sleep(0.05)
        detached = p.poll() is None
        if detached:
            p.kill()
        p.wait()
        for t in readers:
            t.join(10)
        self._check_attach(box, detached, p.returncode, b"".join(out), b"".join(err))

    def _check_attach(self, box: Box, detached: bool, rc: int, out: bytes, err: bytes) -> None:
        disturbed = bool(box.allowed) or box.shim_killed or box.removed != "no"  # another operation hit it
        stderr = err.decode(errors="replace").strip()
        if not detached and rc not in box.allowed and not disturbed:
            self.violation(f"attach-lines: {box.id}: attach exited {rc} on its own: {stderr[-300:]!r}")
            return
        if stderr and not disturbed:
            self.violation(f"attach-lines: {box.id}: attach wrote to stderr: {stderr[-300:]!r}")
        lines = out.decode(errors="replace").split("\n")[:-1]  # the last piece may be cut short by the kill
        numbers = []
        for line in lines:
            if not line.startswith("n ") or not line[2:].isdigit():
                self.violation(f"attach-lines: {box.id}: attach printed {line!r}")
                return
            numbers.append(int(line[2:]))
        if numbers and numbers != list(range(numbers[0], numbers[0] + len(numbers))):
            at = next(i for i, (a, b) in enumerate(zip(numbers, numbers[1:], strict=False)) if b != a + 1)
            self.violation(f"attach-lines: {box.id}: attach lines not consecutive: n {numbers[at + 1]} after "
                           f"n {numbers[at]}")
        if not numbers and detached and not disturbed:
            self.violation(f"attach-lines: {box.id}: attach printed no line in {ATTACH_PATIENCE:g}s of a running "
                           f"counter")
        with self.lock:
            self.stats.attaches += 1
            self.stats.attach_lines_checked += len(numbers)
            self.stats.checked["attach-lines"] = self.stats.checked.get("attach-lines", 0) + len(numbers) + 1

    def op_kill_template(self, spare: bool | None = None) -> None:
        """SIGKILL the warm template that shims are forked from, or (one time in three) its spare shim, whatever
        it is doing: a create it was forking for (or handing to the spare) starts its shim cold, is forked
        directly or is rolled back, and the manager starts another template."""
        c = self.client()
        try:
            pid = int(c.call("ping", idempotent=True).get("template", 0))  # type: ignore[union-attr]
        except ShimdError:
            return
        finally:
            c.close()
        spare = self.rng.random() < 1 / 3 if spare is None else spare
        if spare:
            want = ["template", "--spare", "--parent", str(self.env.manager_pid())]
            pid = next((p.pid for p in psutil.process_iter(["cmdline"]) if (p.info["cmdline"] or [])[-4:] == want),
                       0)
        if pid and alive(pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:  # gone since we looked (a spare taken by a create, a template replaced)
                return
            with self.lock:
                if spare:
                    self.stats.spare_kills += 1
                else:
                    self.stats.template_kills += 1

    def kill_a_shim(self, kinds: tuple[str, ...] = ("counter", "exiter", "trapper", "web", *RESTART_KINDS,
                                                     *CHECKS)) -> None:
        box = self._pick(kinds)
        if box is None:
            return
        pid = read_pid(os.path.join(self.env.state, "shims", box.id, "shim.pid"))
        if pid and alive(pid):
            os.kill(pid, signal.SIGKILL)
            box.shim_killed = True
            box.allowed.add(255)
            self.stats.shim_kills += 1
            self.stats.restart_shim_kills += box.kind in (*RESTART_KINDS, *CHECKS)


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False
