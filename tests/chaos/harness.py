"""The chaos harness: a seeded, concurrent workload (run, exec, attach, kill, stop, rm; containers that log numbered
lines; containers that exit on their own with codes the harness chose) while the manager and shims are SIGKILLed, the
runtime fails or hangs, and the deterministic fault points fire. After every round the invariants are checked, one
function each in tests/chaos/invariants.py; every finding starts with its invariant's name:

- keeps-running: every container that should run still runs, with the same PID, a child of its shim;
- listed-status: every listed container is running or stopped (created only when its create's answer was lost);
- exit-once: every exit is reported exactly once (a container whose init is gone is not left running), with a code
  the container could have exited with (its own code, 128 + a signal the harness sent, 255 "shim-lost" when the
  harness killed its shim), the same in the event and in inspect;
- exec-code: a detached exec whose call was answered exits with its own code (137 only if its container was killed);
- all-or-nothing: every container ever created is fully there or fully gone: a created one stays listed until
  removed, a failed create leaves nothing listed; one not listed has no metadata, shim dir, shim process, runtime
  state, cgroup (any v1 hierarchy, or v2) or process in its cgroups; a stopped one has no process in its cgroups;
- no-leftovers: no zombie of a shim or of the harness, no shim of an unlisted container, no mount under the
  test's dirs; no growth of a shim's file descriptors;
- log-lines: each numbered log holds every line once, in order (losses are counted only when the log reports
  dropped bytes);
- attach-lines: an attach prints the counter's lines, consecutive, at least one, nothing on stderr, and exits with
  the container's code when it ends on its own;
- fault-point: an armed fault point is reached (the manager dies there);
- restart-count, one-run, health-check (crash-looping containers with restart policies, containers with health
  checks that pass, fail or hang): counts only grow and match the journal, runs and exits alternate, one init and
  one check process at a time, none left (tests/chaos/restartops.py);
- image-store, image-ops (with an archive: imports, image removals and commits among the operations): no half
  image is listed, nothing unreferenced is kept once the start-up collection ran, and each image call sent again
  to the next manager ends as it should (tests/chaos/image_invariants.py).

Every one of them has a planted-bug test (tests/chaos/test_planted.py: SHIMD_PLANT=<bug> makes the system
misbehave in one way, and the test shows the check then fails naming the invariant), except fault-point (its test
is the CI round itself, which fails when a point is not reached), image-ops and one-run (none yet).

A finding is recorded when a view first shows it; only views that trail reality are taken again (see invariants.py).
Each manager SIGKILL is counted as one that landed with operations in flight, one at a fault point, or one of an
idle manager. The operations live in tests/chaos/ops.py.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable

from tests.chaos import image_invariants, invariants, netops, restartops
from tests.chaos.imageops import ImageOps, Img
from tests.chaos.netops import NetOps
from tests.chaos.ops import Box, Ops, Stats
from tests.chaos.restartops import RestartOps
from tests.harness import PY, REPO, Env

MAX_LIVE = 30  # containers; past this, rounds remove instead of creating
SLAVE = ["unshare", "--mount", "--propagation", "slave", "--"]
FLAKY = os.path.join(os.path.dirname(os.path.abspath(__file__)), "flaky-runtime")
SETTLE = 10.0  # seconds an eventually consistent view is given to settle
SETTLE_POLL = 0.25
EVIDENCE = "/tmp/shimd-chaos-evidence"  # <seed>-<n>/: a finding and the logs it names, kept past the test
KILL_AFTER = 1.2  # seconds: the kill lands up to this long after the operations began
# the operation that reaches each image point (a point not here is reached by the operation it is named after)
IMAGE_ACTS = {"image:fetched": "import", "image:unpacked": "import", "image:untagged": "rmi",
              "image:committed": "commit"}


class Chaos(Ops, ImageOps, NetOps, RestartOps):
    def __init__(self, env: Env, seed: int, flaky: bool = True, disk_full: bool = False, plant: str = "",
                 settle: float = SETTLE, archive: str = "", netns: str = "") -> None:
        self.disk_full = disk_full
        self.plant = plant  # SHIMD_PLANT for the managers started here (and so for their shims)
        self.settle = settle
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
        self.recorded: set[str] = set()
        self.execs: list[tuple[Box, str, int]] = []
        self.dropped: dict[str, int] = {}  # per counter: bytes its log dropped (disk full)
        self.lines: dict[str, int] = {}  # per counter: lines found in its log
        self.exited: set[str] = set()  # containers whose exit was checked
        self.protected: set[str] = set()  # containers the random operations leave alone
        self.active = 0  # operations under way (started and not finished)
        self.archive = archive  # the archive image operations import ("": none of them)
        self.images: dict[str, Img] = {}
        self.image_ops_active = 0
        self.last_images: image_invariants.ImageView | None = None
        self.netns = netns  # the network namespace the managers run in ("": no web containers)
        self.net_ops_active = 0
        self.restart_seen: dict[str, tuple[int, int]] = {}  # restart-count's baselines (restartops.learn)

    # --- manager control -----------------------------------------------------------------------------------

    def set_runtime_faults(self, fail_pct: int, hang_pct: int, hang_s: float) -> None:
        # whole or not at all: the wrapper reads it at every runc call, and a torn read once put the shell's own
        # error into a container's log (its stderr is the container's) as a line the container never wrote
        with open(self.ctl_file + ".new", "w") as f:
            f.write(f"{fail_pct} {hang_pct} {hang_s}\n")
        os.replace(self.ctl_file + ".new", self.ctl_file)

    def start(self, slave: bool = False, fault: str = "", expect_death: bool = False) -> bool:
        env = {"SHIMD_CHAOS_RUNTIME_CTL": self.ctl_file, "SHIMD_PLANT": self.plant}
        if fault:
            env["SHIMD_FAULTS"] = fault
        if expect_death:  # dies during restore: do not wait for it to serve
            log = os.path.join(self.env.base, "manager-fault.log")
            with open(log, "ab") as f:
                p = subprocess.Popen([*self.env.wrap, *(SLAVE if slave else []), PY, "-m", "manager", "--config",
                                      self.config, "--root", self.env.root, "--state", self.env.state], cwd=REPO,
                                     stdout=f, stderr=subprocess.STDOUT, env={**os.environ, **env})
            rc = p.wait(60)
            if rc != -signal.SIGKILL:
                self.violation(f"fault-point: manager with fault {fault} exited {rc} instead of dying at the point")
            return rc == -signal.SIGKILL
        self.env.start_manager("--config", self.config, wrap=[*self.env.wrap, *SLAVE] if slave else None, env=env)
        if slave:
            self.stats.slave_restarts += 1
        return True

    def kill_manager(self) -> None:
        """SIGKILL the manager, counted by what was under way when it landed."""
        if self.env.proc is not None:
            with self.lock:
                in_flight, in_image_op = self.active > 0, self.image_ops_active > 0
                in_net_op = self.net_ops_active > 0
            self.env.kill_manager(signal.SIGKILL)
            self.stats.manager_kills += 1
            self.stats.kills_in_image_ops += in_image_op
            self.stats.kills_in_network_ops += in_net_op
            if in_flight:
                self.stats.kills_in_flight += 1
            else:
                self.stats.kills_idle += 1

    def violation(self, what: str) -> None:
        """Record a finding at once (a finding seen again in a later view or round is not counted twice), and
        keep the logs of the containers it names and of the manager (the test's dir is removed at its end)."""
        with self.lock:
            if what in self.recorded:
                return
            self.recorded.add(what)
            self.stats.violations.append(f"round {self.stats.rounds}: {what}")
            n = len(self.stats.violations)
        if not self.plant and self.env.log_files:  # (not for planted bugs, nor made-up views)
            self.keep_evidence(n, what)

    def keep_evidence(self, n: int, what: str) -> None:
        dest = os.path.join(EVIDENCE, f"{self.stats.seed}-{n}")
        os.makedirs(dest, exist_ok=True)
        with open(os.path.join(dest, "finding"), "w") as f:
            f.write(what + "\n")
        ids = set(re.findall(re.escape(self.env.tag) + r"-\d+", what))
        for path in [*self.env.log_files[-3:], *(os.path.join(self.env.state, "shims", id, "shim.log") for id in ids)]:
            try:
                shutil.copy(path, os.path.join(dest, os.path.basename(os.path.dirname(path)) + "-" +
                                               os.path.basename(path)))
            except OSError:
                pass

    def count(self, invariant: str, n: int = 1) -> None:
        with self.lock:
            self.stats.checked[invariant] = self.stats.checked.get(invariant, 0) + n

    def tracked(self, op: Callable[[], object]) -> None:
        """Run op, counted as under way meanwhile (what kill_manager looks at)."""
        with self.lock:
            self.active += 1
        try:
            op()
        finally:
            with self.lock:
                self.active -= 1

    # --- rounds --------------------------------------------------------------------------------------------

    def round(self) -> None:
        """Operations in threads, the manager SIGKILLed under them (and now and then a shim), a new manager: the
        clients send their calls again to it (a changing call with its key), so each gets its real answer."""
        self.stats.rounds += 1
        rng = self.rng
        if self.flaky:
            self.set_runtime_faults(*rng.choice([(0, 0, 0), (0, 0, 0), (15, 0, 0), (0, 10, 1.5)]))
        choices = [self.op_run, self.op_run, self.op_run, self.op_signal, self.op_stop, self.op_rm, self.op_exec,
                   self.op_attach, self.op_kill_template, *self.image_choices(), *self.net_choices(),
                   *self.restart_choices()]
        with self.lock:
            live = sum(b.created == "yes" and b.removed == "no" for b in self.boxes.values())
        if live > MAX_LIVE:  # a long soak is about kills, not about an ever larger population: remove, don't run
            choices = [self.op_rm if c == self.op_run else c for c in choices]
        ops = [rng.choice(choices) for _ in range(rng.randint(2, 5))]
        threads = [threading.Thread(target=self.tracked, args=(op,)) for op in ops]
        for t in threads:
            t.start()
        # the kill lands at a random moment, or as the last operation still under way is left alone (many take
        # milliseconds: a kill after them would hit an idle manager and test nothing of them)
        deadline = time.monotonic() + rng.uniform(0.02, KILL_AFTER)
        while time.monotonic() < deadline and self.active > 1:
            time.sleep(0.005)
        self.kill_manager()
        if rng.random() < 0.15:
            self.kill_a_shim()
        self.set_runtime_faults(0, 0, 0)
        self.start(slave=rng.random() < 0.3)
        for t in threads:
            t.join(120)
        self.check()

    def fault_round(self, point: str) -> None:
        """Restart the manager armed with one fault point and make it reach the point; a point counts as hit
        only when the manager died there."""
        self.stats.rounds += 1
        self.kill_manager()
        op, _ = point.split(":")
        if op == "restore":
            if not any(b.created == "yes" and b.removed == "no" for b in self.boxes.values()):
                self.start()
                self.op_run()
                self.kill_manager()
            reached = self.start(fault=point, expect_death=True)
        else:
            act_on = IMAGE_ACTS.get(point, op)
            target: Box | Img | None = None
            if act_on not in ("create", "import"):
                # a fresh long-running container, so that every point of op is on its path; an image of its own
                # (a commit of it) to remove
                self.start()
                target = self.op_run("counter")
                if act_on == "rmi" and target.created == "yes":
                    target = self.op_commit(target, strict=True)
                self.kill_manager()
            self.start(fault=point)
            before = self.env.proc
            assert before is not None
            if act_on == "import":
                worker = threading.Thread(target=self.op_import, args=(True,))
            elif target is None:
                worker = threading.Thread(target=self.op_run, args=("missing" if point == "create:failed" else "",))
            else:  # a target whose create (or commit) failed: the point is not reached, and that is recorded
                act = {"delete": self.op_rm, "exec": self.op_exec, "stop": self.op_stop, "rmi": self.op_rmi,
                       "commit": lambda box: self.op_commit(box, strict=True)}[act_on]
                ok = target.created == "yes" if isinstance(target, Box) else target.made == "yes"
                worker = threading.Thread(target=act if ok else lambda _: None, args=(target,))
            worker.start()
            try:
                rc = before.wait(30)
            except subprocess.TimeoutExpired:
                rc = None
            reached = rc == -signal.SIGKILL
            if not reached:
                self.violation(f"fault-point: {point} was not reached (manager: {rc})")
                self.env.kill_manager(signal.SIGKILL)
            self.env.proc = None
        if reached:
            self.stats.fault_points[point] = self.stats.fault_points.get(point, 0) + 1
            self.stats.kills_at_fault_points += 1
            self.stats.manager_kills += 1
        elif op != "restore":  # the harness killed it, its operation under way
            self.stats.kills_in_flight += 1
            self.stats.manager_kills += 1
        self.start()
        if op != "restore":
            worker.join(120)  # its call, sent again to this manager, gets its answer
        self.check()

    # --- invariants ----------------------------------------------------------------------------------------

    def check(self) -> None:
        """Check every invariant. Findings no later view can undo are recorded as soon as a view shows them; the
        view is taken again (for up to SETTLE seconds) only while it shows something that may be a lag, and what
        is still there then is recorded. Beliefs about the containers are updated last, from the last view."""
        c = self.client()
        try:
            invariants.exec_exits_have_their_own_codes(self, c)
            deadline = time.monotonic() + self.settle
            while True:
                view = invariants.take_view(self, c)
                for check in invariants.INVARIANTS:
                    check(self, view)
                image_invariants.check(self, c, view.unsettled)
                netops.check(self, view)
                restartops.check(self, view)
                new = [u for u in view.unsettled if u not in self.recorded]  # (one recorded before: no lag)
                if not new or time.monotonic() > deadline:
                    break
                time.sleep(SETTLE_POLL)  # an eventually consistent view: look again
            for what in view.unsettled:
                self.violation(what)
            invariants.count_checks(self, view)
            invariants.logs_hold_every_line_once_in_order(self, c, view)
            invariants.learn(self, view)
            restartops.learn(self, view)
            image_invariants.learn(self)
        finally:
            c.close()

    # --- the end -------------------------------------------------------------------------------------------

    def finish(self) -> None:
        c = self.client()
        try:
            ids = [x["id"] for x in c.call("list", {"all": True})]
        finally:
            c.close()
        for id in ids:
            if id in self.boxes:
                self.boxes[id].removed = "maybe"
        if ids:
            r = self.env.ctl("rm", "-f", *ids, timeout=300)
            if r.rc != 0:
                self.violation(f"all-or-nothing: final rm -f failed: {r.err.strip()}")
        self.check()

    def report(self) -> str:
        return json.dumps(dict(self.stats.__dict__), indent=1, default=sorted)
