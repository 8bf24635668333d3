"""The measurements: each function takes the systems, measures one group of figures and returns raw samples (seconds,
bytes, counts). Latencies alternate the systems within each iteration, the order rotating; nothing is rendered here.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import psutil
from systems import helper_kind
from util import REPO, median, rotate, say, timed, wait_for

DAEMON_TIMEOUT = 300.0  # a restore that takes longer than this is a failure, not a figure


def cli_latency(systems: list, n: int, kind: str, prefix: str) -> dict[str, list[float]]:
    """`run --rm true` (kind "true") or `run -d sleep` (kind "detached") n times per system; the detached
    container is removed after each, untimed."""
    out: dict[str, list[float]] = {s.name: [] for s in systems}
    for i in range(n):
        for s in rotate(systems, i):
            id = f"{prefix}-{kind[0]}{i}"
            if kind == "true":
                out[s.name].append(s.run_true(id))
            else:
                out[s.name].append(s.run_detached(id))
                s.remove(id)
    return out


def api_start(shimd, runc, n: int, prefix: str) -> dict[str, list[float]]:
    """create {spec, start: true} from a connected client vs runc create + runc start, removed after each."""
    out: dict[str, list[float]] = {"shimd": [], "runc": []}
    client = shimd.client()
    client.call("ping", idempotent=True)  # connected before the first timed call
    for i in range(n):
        id = f"{prefix}-a{i}"
        for name in rotate(["runc", "shimd"], i):
            if name == "runc":
                out["runc"].append(runc.create_start(id))
                runc.remove(id)
            else:
                out["shimd"].append(shimd.api_create_start(client, id))
                shimd.api_remove(client, id)
    return out


class Subscriber:
    """An events CLI (`shimctl events --format json`, `ctr events`) started once and kept connected; a thread
    stamps each line with perf_counter as it arrives."""

    def __init__(self, system) -> None:
        self.system = system
        self.lines: list[tuple[float, str]] = []
        self.cond = threading.Condition()
        self.proc = subprocess.Popen(system.events_cmd(), cwd=REPO, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, bufsize=1)
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            t = time.perf_counter()
            with self.cond:
                self.lines.append((t, line))
                self.cond.notify_all()

    def wait(self, type: str, id: str, timeout: float = 30) -> tuple[float, dict]:
        """The arrival time and content of the init's `type` event of id."""
        deadline = time.monotonic() + timeout
        seen = 0
        with self.cond:
            while True:
                for t, line in self.lines[seen:]:
                    ev = self.system.event_match(line, type, id)
                    if ev is not None:
                        return t, ev
                seen = len(self.lines)
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    raise RuntimeError(f"{self.system.name}: no {type} event of {id} at the subscriber")
                self.cond.wait(left)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.thread.join(5)


def exit_latency(systems: list, n: int, prefix: str) -> dict[str, list[float]]:
    """kill -9 of a container's init to its exit event at an already-connected subscriber. The container is started
    after the subscriber and its start event awaited there first, so the subscriber is known to be connected."""
    out: dict[str, list[float]] = {s.name: [] for s in systems}
    subs = {s.name: Subscriber(s) for s in systems}
    try:
        for i in range(n):
            for s in rotate(systems, i):
                id = f"{prefix}-x{i}"
                s.run_detached(id)
                _, ev = subs[s.name].wait("start", id)
                pid = ev.get("pid") or s.init_pid(id)
                t0 = time.perf_counter()
                os.kill(pid, signal.SIGKILL)
                t, _ = subs[s.name].wait("exit", id)
                out[s.name].append(t - t0)
                s.remove(id)
    finally:
        for sub in subs.values():
            sub.close()
    return out


def _mem(procs: list[psutil.Process]) -> list:
    out = []
    for p in procs:
        try:
            out.append(p.memory_full_info())
        except psutil.Error:
            pass
    return out


def _threads(procs: list[psutil.Process]) -> list[int]:
    out = []
    for p in procs:
        try:
            out.append(p.num_threads())
        except psutil.Error:
            pass
    return out


def memory(system, expect: int) -> dict:
    """USS/PSS/threads of each container monitor (medians and sums), the daemon's RSS, and any helper processes."""
    mons = system.monitors()
    infos = _mem(mons)
    helpers = system.helpers(mons)
    hinfos = _mem(helpers)
    return {
        "monitors": len(infos), "expected": expect,
        "uss": median([i.uss for i in infos]), "pss": median([i.pss for i in infos]),
        "uss_sum": sum(i.uss for i in infos), "pss_sum": sum(i.pss for i in infos),
        "threads": median(_threads(mons)),
        "daemon_rss": psutil.Process(system.daemon_pid()).memory_info().rss,
        "daemon_fds": len(os.listdir(f"/proc/{system.daemon_pid()}/fd")),
        "helpers": len(hinfos), "helpers_rss": sum(i.rss for i in hinfos), "helpers_uss": sum(i.uss for i in hinfos),
        "helpers_pss": sum(i.pss for i in hinfos),
        "helper_kinds": sorted({helper_kind(h) for h in helpers}),
    }


def _shimd_running(shimd, client, want: set[str]) -> bool:
    from shimproto.errors import ShimdError

    try:
        got = {c["id"] for c in shimd.listing(client) if c["status"] == "running"}
    except ShimdError:
        return False
    return want <= got


def _sock_id(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_ctime_ns


def restore_once(system, want: set[str]) -> float:
    """SIGKILL the daemon, start it, and time until every id of want is listed running. Both are polled only once
    the new daemon has bound its socket again (a client connecting to the stale one would retry on its own timer:
    ZeroMQ every 100 ms), then as fast as they answer: shimd through the API from a client made then, containerd
    with `ctr task ls`, whose own start (a Go binary, some ms) is part of its figure."""
    old = _sock_id(system.sock)
    system.kill_daemon()
    t0 = time.perf_counter()
    system.start_daemon()
    wait_for(lambda: _sock_id(system.sock) not in (None, old), DAEMON_TIMEOUT, f"{system.name} to bind its socket",
             0.001)
    if system.name == "shimd":
        client = system.new_client(timeout=10)
        try:
            wait_for(lambda: _shimd_running(system, client, want), DAEMON_TIMEOUT,
                     f"shimd to list {len(want)} running", 0.002)
        finally:
            client.close()
    else:
        wait_for(lambda: want <= system.running_ids(), DAEMON_TIMEOUT, f"containerd to list {len(want)} running",
                 0.002)
    return time.perf_counter() - t0


def start_many(systems: list, ids: list[str]) -> None:
    """Start ids on each system through its CLI (`run -d`), the systems taking turns."""
    for i, id in enumerate(ids):
        for s in rotate(systems, i):
            s.run_detached(id)


KSM = "/sys/kernel/mm/ksm"


def _ksm(name: str) -> int:
    with open(f"{KSM}/{name}") as f:
        return int(f.read().split()[0])


def ksm_setting(put: str | None = None) -> str | None:
    """ksmd's run setting ("0" stopped, "1" running); with put, write that back first. None without KSM."""
    try:
        if put is not None:
            with open(f"{KSM}/run", "w") as f:
                f.write(put)
        with open(f"{KSM}/run") as f:
            return f.read().strip()
    except OSError:
        return None


def _ksmd_cpu() -> float:
    """CPU seconds ksmd has used (0 when there is none)."""
    for p in psutil.process_iter(["name"]):
        if p.info["name"] == "ksmd":
            t = p.cpu_times()
            return t.user + t.system
    return 0.0


def wait_merged(scans: int, timeout: float) -> dict:
    """Wait for ksmd to finish `scans` more full scans of the memory offered to it (a page is merged only once it
    has stayed the same for a scan), at the host's own pace: the seconds waited, ksmd's CPU seconds meanwhile,
    and its settings. {} when ksmd is not running (memory_merge = false, or no KSM)."""
    try:
        if _ksm("run") != 1:
            return {}
        first, cpu0, t0 = _ksm("full_scans"), _ksmd_cpu(), time.monotonic()
        say(f"memory: waiting for {scans} full ksmd scans (at most {timeout:.0f}s)")
        wait_for(lambda: _ksm("full_scans") >= first + scans, timeout, f"{scans} full ksmd scans", 0.5)
        return {"scans": scans, "waited": time.monotonic() - t0, "cpu": _ksmd_cpu() - cpu0,
                "pages_to_scan": _ksm("pages_to_scan"), "sleep_ms": _ksm("sleep_millisecs")}
    except OSError:
        return {}


def memory_and_restore(systems: list, count: int, restores: int, prefix: str, settle: float,
                       merge_timeout: float = 600.0) -> dict[str, dict]:
    """count sleeping containers on each system at once; memory right after start and again once ksmd has merged
    what it will; then daemon restores, the systems alternating."""
    ids = [f"{prefix}-m{i}" for i in range(count)]
    say(f"memory: starting {count} containers on each of {', '.join(s.name for s in systems)}")
    start_many(systems, ids)
    time.sleep(settle)  # let start-up allocations settle
    res = {s.name: memory(s, count) for s in systems}
    ksm = wait_merged(3, merge_timeout)
    for s in systems:
        res[s.name]["ksm"] = ksm
        if ksm:
            res[s.name]["merged"] = memory(s, count)
    want = set(ids)
    for s in systems:
        res[s.name]["restore"] = []
    for i in range(restores):
        for s in rotate(systems, i):
            res[s.name]["restore"].append(restore_once(s, want))
    say("memory: removing")
    for s in systems:
        for id in ids:
            s.remove(id)
    return res


def _parallel(shimd, ids: list[str], op: str, workers: int) -> float:
    """create+start or delete every id through the API with `workers` connected clients; the wall time."""
    chunks = [ids[k::workers] for k in range(workers)]

    def work(chunk: list[str]) -> None:
        client = shimd.new_client(timeout=120)
        try:
            for id in chunk:
                if op == "create":
                    shimd.api_create_start(client, id)
                else:
                    shimd.api_remove(client, id)
        finally:
            client.close()

    t0 = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        for f in [pool.submit(work, c) for c in chunks if c]:
            f.result()
    return time.perf_counter() - t0


def scale(shimd, count: int, restores: int, ps_iters: int, prefix: str, settle: float, workers: int = 4) -> dict:
    """count containers on shimd at once: start time, all listed, `ps` time, memory, restore, removal time."""
    ids = [f"{prefix}-s{i}" for i in range(count)]
    res: dict = {"count": count, "workers": workers}
    say(f"scale: starting {count} containers through the API ({workers} clients)")
    res["start_all"] = _parallel(shimd, ids, "create", workers)
    say(f"scale: started in {res['start_all']:.1f}s")
    time.sleep(settle)
    res["listed_running"] = sum(c["status"] == "running" for c in shimd.listing())
    res["ps_cli"] = [timed(shimd.ctl("ps")) for _ in range(ps_iters)]
    client = shimd.client()
    api = []
    for _ in range(ps_iters):
        t0 = time.perf_counter()
        shimd.listing(client)
        api.append(time.perf_counter() - t0)
    res["ps_api"] = api
    res["mem"] = memory(shimd, count)
    res["restore"] = [restore_once(shimd, set(ids)) for _ in range(restores)]
    say("scale: removing")
    res["remove_all"] = _parallel(shimd, ids, "delete", workers)
    return res
