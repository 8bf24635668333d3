"""Side-by-side benchmark: runc alone (the floor), shimd, and containerd + containerd-shim-runc-v2 (Debian's).

Every figure is measured in one run, the three systems alternating within each iteration (the order rotates), and
reported as medians with ratios; the machines are shared and noisy, so only the ratios of one run mean much.
All three run the same busybox tree: runc from a bundle whose root is that tree (read-only), containerd with
`ctr run --rootfs` on it (no snapshot), shimd with its built-in image (an overlay per container, as always).
Each CLI invocation is timed whole, from spawn to exit, as a user sees it.

Usage (as root; `make bench` sets things up and runs it under tini so that exited shims are reaped):
    python bench/run.py [-n 20] [--containers 20] [--out docs/benchmarks.md]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

import psutil

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PY = os.path.join(REPO, ".venv", "bin", "python")
QUIET = {"stdin": subprocess.DEVNULL, "stdout": subprocess.DEVNULL, "stderr": subprocess.PIPE}


def _run(cmd: list[str], check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
    # runc without a terminal hands its stdio to the container: a pipe there would never close, so runc gets none
    stdio = {**QUIET, "stderr": subprocess.DEVNULL} if cmd[0] == "runc" else QUIET
    p = subprocess.run(cmd, timeout=timeout, cwd=REPO, **stdio)
    if check and p.returncode != 0:
        err = (p.stderr or b"").decode(errors="replace").strip()
        raise RuntimeError(f"{' '.join(cmd)}: exit {p.returncode}: {err}")
    return p


def _timed(cmd: list[str], expect: int = 0) -> float:
    t0 = time.perf_counter()
    p = _run(cmd, check=False)
    took = time.perf_counter() - t0
    if p.returncode != expect:
        raise RuntimeError(f"{' '.join(cmd)}: exit {p.returncode}: {(p.stderr or b'').decode(errors='replace')}")
    return took


def _wait(pred, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.005)


class Daemon:
    """A system with a daemon the memory figures kill and restart."""

    proc: subprocess.Popen | None = None

    def kill_daemon(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(15)


class Shimd(Daemon):
    name = "shimd"

    def __init__(self, base: str) -> None:
        self.root, self.state = os.path.join(base, "shimd-root"), os.path.join(base, "shimd-state")
        self.sock = os.path.join(self.state, "shimd.sock")
        self.log = open(os.path.join(base, "shimd-manager.log"), "ab")
        self.proc: subprocess.Popen | None = None

    def ctl(self, *args: str) -> list[str]:
        return [PY, "-m", "shimctl", "--address", self.sock, *args]

    def start_daemon(self) -> None:
        self.proc = subprocess.Popen([PY, "-m", "manager", "--root", self.root, "--state", self.state], cwd=REPO,
                                     stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log)

    def listed_running(self) -> int:
        p = subprocess.run(self.ctl("ps", "--format", "json"), capture_output=True, timeout=30, cwd=REPO)
        if p.returncode != 0:
            return -1
        return sum(x["status"] == "running" for x in json.loads(p.stdout))

    def run_true(self, id: str) -> float:
        return _timed(self.ctl("run", "--rm", "--name", id, "busybox", "/bin/true"))

    def run_detached(self, id: str) -> float:
        return _timed(self.ctl("run", "-d", "--name", id, "busybox", "sleep", "100000"))

    def remove(self, id: str) -> None:
        _run(self.ctl("rm", "-f", id))

    def ids(self) -> list[str]:
        p = subprocess.run(self.ctl("ps", "-a", "--format", "json"), capture_output=True, timeout=30, cwd=REPO)
        return [x["id"] for x in json.loads(p.stdout)] if p.returncode == 0 else []

    def monitors(self) -> list[psutil.Process]:
        return [p for p in psutil.process_iter(["cmdline"])
                if p.info["cmdline"] and "shimd" in " ".join(p.info["cmdline"][:3])
                and "start" in p.info["cmdline"] and self.state in " ".join(p.info["cmdline"])]

class Containerd(Daemon):
    name = "containerd"

    def __init__(self, base: str, rootfs: str) -> None:
        self.dir = os.path.join(base, "containerd")
        os.makedirs(self.dir)
        self.sock = os.path.join(self.dir, "containerd.sock")
        self.config = os.path.join(self.dir, "config.toml")
        with open(self.config, "w") as f:
            f.write(f'version = 2\nroot = "{self.dir}/root"\nstate = "{self.dir}/state"\n'
                    f'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n[grpc]\n  address = "{self.sock}"\n')
        self.rootfs = rootfs
        self.log = open(os.path.join(base, "containerd.log"), "ab")
        self.proc: subprocess.Popen | None = None

    def ctl(self, *args: str) -> list[str]:
        return ["ctr", "-a", self.sock, *args]

    def start_daemon(self) -> None:
        self.proc = subprocess.Popen(["containerd", "--config", self.config], stdin=subprocess.DEVNULL,
                                     stdout=self.log, stderr=self.log)

    def listed_running(self) -> int:
        p = subprocess.run(self.ctl("task", "ls"), capture_output=True, text=True, timeout=30)
        if p.returncode != 0:
            return -1
        return sum(" RUNNING" in line for line in p.stdout.splitlines())

    def run_true(self, id: str) -> float:
        return _timed(self.ctl("run", "--rm", "--env", "PATH=/bin", "--rootfs", self.rootfs, id, "/bin/true"))

    def run_detached(self, id: str) -> float:
        return _timed(self.ctl("run", "-d", "--env", "PATH=/bin", "--rootfs", self.rootfs, id, "sleep", "100000"))

    def remove(self, id: str) -> None:
        _run(self.ctl("task", "rm", "-f", id), check=False)  # kills it first; fails harmlessly when no task
        _run(self.ctl("container", "rm", id))

    def ids(self) -> list[str]:
        p = subprocess.run(self.ctl("container", "ls", "-q"), capture_output=True, text=True, timeout=30)
        return p.stdout.split()

    def monitors(self) -> list[psutil.Process]:
        return [p for p in psutil.process_iter(["cmdline"])
                if p.info["cmdline"] and p.info["cmdline"][0].endswith("containerd-shim-runc-v2")
                and self.sock in " ".join(p.info["cmdline"])]

class Runc:
    name = "runc"

    def __init__(self, base: str, rootfs: str) -> None:
        self.root = os.path.join(base, "runc-root")
        self.bundles = os.path.join(base, "bundles")
        for kind, args in (("true", ["/bin/true"]), ("sleep", ["sleep", "100000"])):
            b = os.path.join(self.bundles, kind)
            os.makedirs(b)
            _run(["runc", "spec", "--bundle", b])
            with open(os.path.join(b, "config.json")) as f:
                spec = json.load(f)
            spec["process"].update(terminal=False, args=args)
            spec["root"] = {"path": rootfs, "readonly": True}
            with open(os.path.join(b, "config.json"), "w") as f:
                json.dump(spec, f)

    def run_true(self, id: str) -> float:
        return _timed(["runc", "--root", self.root, "run", "--bundle", os.path.join(self.bundles, "true"), id])

    def run_detached(self, id: str) -> float:
        return _timed(["runc", "--root", self.root, "run", "-d", "--bundle", os.path.join(self.bundles, "sleep"),
                       id])

    def remove(self, id: str) -> None:
        _run(["runc", "--root", self.root, "delete", "--force", id])

    def ids(self) -> list[str]:
        p = subprocess.run(["runc", "--root", self.root, "list", "-q"], capture_output=True, text=True)
        return p.stdout.split()


def _median_ms(xs: list[float]) -> float:
    return statistics.median(xs) * 1000


def _latency(systems: list, n: int, what: str) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {s.name: [] for s in systems}
    for i in range(n):
        order = systems[i % len(systems):] + systems[:i % len(systems)]
        for s in order:
            id = f"b{what[0]}{i}"
            if what == "true":
                out[s.name].append(s.run_true(id))
            else:
                out[s.name].append(s.run_detached(id))
                s.remove(id)
    return out


def _memory(systems: list, count: int) -> dict[str, dict]:
    """count sleeping containers per system, then the monitors' USS/PSS/threads and the daemon's RSS."""
    res = {}
    for s in systems:
        ids = [f"mem{i}" for i in range(count)]
        for id in ids:
            s.run_detached(id)
        time.sleep(1.0)  # let start-up allocations settle
        mons = s.monitors()
        infos = [m.memory_full_info() for m in mons]
        res[s.name] = {
            "monitors": len(mons),
            "uss": statistics.median(i.uss for i in infos) / 2**20,
            "pss": statistics.median(i.pss for i in infos) / 2**20,
            "threads": statistics.median(m.num_threads() for m in mons),
            "daemon_rss": psutil.Process(s.proc.pid).memory_info().rss / 2**20,
        }
        # restart the daemon with count containers running: time until all are listed running again
        times = []
        for _ in range(3):
            s.kill_daemon()
            t0 = time.perf_counter()
            s.start_daemon()
            _wait(lambda s=s: s.listed_running() == count, 60, f"{s.name} to list {count} running")
            times.append(time.perf_counter() - t0)
        res[s.name]["restart"] = statistics.median(times)
        for id in ids:
            s.remove(id)
    return res


def _report(lat: dict[str, dict[str, list[float]]], mem: dict[str, dict], n: int, count: int) -> str:
    def row(label: str, d: dict[str, list[float]]) -> str:
        r, s, c = (_median_ms(d[k]) for k in ("runc", "shimd", "containerd"))
        return f"| {label} | {r:.0f} ms | {s:.0f} ms | {c:.0f} ms | {s / c:.2f} | {s / r:.2f} |"

    cpu = platform.processor() or platform.machine()
    lines = [
        "# Benchmarks",
        "",
        f"Written by `make bench` (bench/run.py) on {time.strftime('%Y-%m-%d')}: {os.cpu_count()} CPUs ({cpu}), "
        f"{platform.release()}, runc {_version(['runc', '--version'], 2)}, containerd "
        f"{_version(['containerd', '--version'], 2)}. "
        f"Medians of {n} iterations per figure, the three systems alternating within each iteration. A ratio "
        "below 1 means shimd is faster or smaller.",
        "",
        "| figure | runc alone | shimd | containerd | shimd / containerd | shimd / runc |",
        "|---|---|---|---|---|---|",
        row("run `/bin/true` to exit and delete (`run --rm`)", lat["true"]),
        row("detached start (`run -d ... sleep`)", lat["detached"]),
        "",
        f"With {count} sleeping containers each:",
        "",
        "| figure | shimd | containerd | shimd / containerd |",
        "|---|---|---|---|",
    ]
    s, c = mem["shimd"], mem["containerd"]
    for label, key, unit in (("USS per container monitor (shim)", "uss", "MiB"),
                             ("PSS per container monitor (shim)", "pss", "MiB"),
                             ("threads per shim", "threads", ""), ("daemon RSS", "daemon_rss", "MiB")):
        lines.append(f"| {label} | {s[key]:.1f} {unit} | {c[key]:.1f} {unit} | {s[key] / c[key]:.2f} |")
    lines.append(f"| daemon SIGKILL + start until all {count} are listed running | {s['restart'] * 1000:.0f} ms | "
                 f"{c['restart'] * 1000:.0f} ms | {s['restart'] / c['restart']:.2f} |")
    lines += [
        "",
        f"Monitors counted: shimd {s['monitors']}, containerd {c['monitors']}. The CLI is part of every latency "
        "figure (`shimctl` is a Python process; `ctr` and `runc` are Go binaries). shimd mounts an overlay per "
        "container; `ctr run --rootfs` and the runc bundle use the tree as it is.",
        "",
    ]
    return "\n".join(lines)


def _version(cmd: list[str], word: int) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True).stdout.split()[word]
    except (OSError, IndexError):
        return "?"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=20, help="iterations per latency figure")
    ap.add_argument("--containers", type=int, default=20, help="running containers for the memory figures")
    ap.add_argument("--out", default=os.path.join(REPO, "docs", "benchmarks.md"))
    a = ap.parse_args()
    if os.geteuid() != 0:
        print("bench: run as root", file=sys.stderr)
        return 2
    for tool in ("runc", "containerd", "ctr", "containerd-shim-runc-v2"):
        if not shutil.which(tool):
            print(f"bench: {tool} is not installed (apt-get install containerd runc)", file=sys.stderr)
            return 2
    base = tempfile.mkdtemp(prefix="shimd-bench-")
    shimd = Shimd(base)
    systems_started: list = []
    runc = None
    try:
        shimd.start_daemon()
        systems_started.append(shimd)
        _wait(lambda: shimd.listed_running() >= 0, 30, "the shimd manager to serve")
        shimd.run_true("warmup")  # builds the busybox image
        rootfs = os.path.join(shimd.root, "images", "busybox", "rootfs")
        ctd = Containerd(base, rootfs)
        ctd.start_daemon()
        systems_started.append(ctd)
        _wait(lambda: ctd.listed_running() >= 0, 30, "containerd to serve")
        ctd.run_true("warmup")
        runc = Runc(base, rootfs)
        systems = [runc, shimd, ctd]
        lat = {"true": _latency(systems, a.n, "true"), "detached": _latency(systems, a.n, "detached")}
        mem = _memory([shimd, ctd], a.containers)
        text = _report(lat, mem, a.n, a.containers)
        with open(a.out, "w") as f:
            f.write(text)
        print(text)
        return 0
    finally:
        for s in [*systems_started, *([runc] if runc else [])]:
            for id in s.ids():  # whatever a failure left behind
                try:
                    s.remove(id)
                except (RuntimeError, subprocess.SubprocessError) as e:
                    print(f"bench: cleanup of {s.name} {id}: {e}", file=sys.stderr)
        for s in systems_started:
            if s.proc is not None and s.proc.poll() is None:
                s.proc.send_signal(signal.SIGTERM)
                s.proc.wait(30)
        subprocess.run(["umount", "-R", base], capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
