"""Log throughput: how fast the shim writes a container's output into its CRI log, and how fast `shimctl logs` and
an attached `shimctl run` read it back, each beside the plain-`cat` floor, in one run, alternating, medians.

The generator is busybox `cat` of a file of lines made in the container's root filesystem beforehand (a `--rootfs`
copy of the built-in busybox image plus /data/l100 and /data/l10: 100-byte and 10-byte lines), so the generator
runs at pipe speed, far above busybox `yes`.

- write: `busybox cat FILE | cat > OUT` on the host (the floor: the same stream copied into a file by cat, OUT
  beside the logs) against a detached container running `cat /data/lN`, the log rotating at the manager's default
  max-size: the copy time is from the first record's time to the last's (the shim stamps each chunk as it reads it),
  and also from the API's `start` until `wait` sees the exit (runc's start included). Rates are of the container's
  output bytes; the log is larger by the CRI prefix of every line (~40 bytes).
- read: `cat` of the log files to /dev/null against `shimctl logs ID > /dev/null` (a 100-byte-line log, rotated
  into several files) and an attached `shimctl run ... cat /data/l100 > /dev/null` (the container writing while
  the CLI reads; the whole command timed, start-up included), and `shimctl attach` to a running container that
  starts its `cat` once attach sends it a line. Rates are of the container's output bytes; the log on disk is
  larger by the CRI prefix of every line.

Figures are wall-clock times (the shim's copy time as said above), each taken after a sync so that no figure pays
for another's writeback; bytecode is compiled first (these machines set PYTHONDONTWRITEBYTECODE=1; an install
compiles it). Run as root: `.venv/bin/python bench/logs.py [-n 3] [--mb 300] [--mb10 100]`; it re-runs itself
under `tini -s` so that exited shims are reaped (set BENCH_LOGS_REAPER=1 when already under a subreaper, as
`make bench` is). bench/run.py may run it as a subprocess and append its stdout (a markdown table) to
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import calendar
import hashlib
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

from util import manager_cmd

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
PY = os.path.join(REPO, ".venv", "bin", "python")
MB = 1_000_000
BUSYBOX = shutil.which("busybox") or "/bin/busybox"


def _wait(pred, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.01)


def make_lines(path: str, size: int, width: int) -> None:
    """size bytes of numbered lines of width bytes (newline included)."""
    per_block = (1 << 20) // width
    with open(path, "wb") as f:
        n, written = 0, 0
        while written < size:
            block = b"".join(b"%0*d\n" % (width - 1, (n + i) % 10 ** (width - 1)) for i in range(per_block))
            block = block[: size - written]
            f.write(block)
            written += len(block)
            n += per_block


class Shimd:
    def __init__(self, base: str) -> None:
        self.root, self.state = os.path.join(base, "root"), os.path.join(base, "state")
        self.sock = os.path.join(self.state, "shimd.sock")
        self.log = open(os.path.join(base, "manager.log"), "ab")
        cmd, env = manager_cmd(self.root, self.state)
        self.proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=self.log,
                                     stderr=self.log)
        _wait(lambda: os.path.exists(self.sock), 30, "the manager's socket")
        from shimproto.client import Client

        self.api = Client(self.sock, timeout=60)
        _wait(lambda: self._ping(), 30, "the manager to answer")

    def _ping(self) -> bool:
        try:
            self.api.call("ping", {}, timeout=2, idempotent=True)
            return True
        except Exception:
            return False

    def ctl(self, *args: str) -> list[str]:
        return [PY, "-m", "shimctl", "--address", self.sock, *args]

    def create(self, id: str, rootfs: str, args: list[str]) -> None:
        spec = {"args": args, "id": id, "rootfs": rootfs}
        self.api.call("create", {"spec": spec, "start": False}, timeout=60)

    def start_and_wait(self, id: str) -> float:
        os.sync()
        t0 = time.perf_counter()
        self.api.call("start", {"id": id}, timeout=60)
        while not self.api.call("wait", {"id": id, "timeout": 20}, timeout=40, idempotent=True)["exited"]:
            pass
        return time.perf_counter() - t0

    def copy_seconds(self, id: str) -> float:
        """From the time of the first record to that of the last: how long the shim took to copy the output."""
        files = self.log_files(id)
        with open(files[0], "rb") as f:
            first = f.readline().split(b" ", 1)[0]
        with open(files[-1], "rb") as f:
            f.seek(max(0, os.path.getsize(files[-1]) - 4096))
            last = f.read().rstrip(b"\n").rsplit(b"\n", 1)[-1].split(b" ", 1)[0]
        return (parse_ts(last) - parse_ts(first)) / 1e9

    def log_files(self, id: str) -> list[str]:
        d = os.path.join(self.root, "containers", id)
        nums = sorted((int(n.rsplit(".", 1)[1]) for n in os.listdir(d)
                       if n.startswith("container.log.") and n.rsplit(".", 1)[1].isdigit()), reverse=True)
        return [os.path.join(d, f"container.log.{n}") for n in nums] + [os.path.join(d, "container.log")]

    def remove(self, id: str) -> None:
        self.api.call("delete", {"id": id, "force": True}, timeout=60)

    def stop(self) -> None:
        for c in self.api.call("list", {"all": True}, idempotent=True):
            try:
                self.remove(c["id"])
            except Exception as e:  # noqa: BLE001 - cleanup goes on
                print(f"bench: cleanup of {c['id']}: {e}", file=sys.stderr)
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(30)


def parse_ts(ts: bytes) -> int:
    secs = calendar.timegm(time.strptime(ts[:19].decode(), "%Y-%m-%dT%H:%M:%S"))
    return secs * 1_000_000_000 + int(ts[20:29])


def timed(cmd: list[str] | str, **kw) -> float:
    os.sync()  # every figure starts with no dirty pages: a backlog of writeback would throttle whoever comes next
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, cwd=REPO, **kw)
    return time.perf_counter() - t0


def digest(cmd: list[str]) -> str:
    h = hashlib.sha256()
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, cwd=REPO) as p:
        assert p.stdout is not None
        while chunk := p.stdout.read(1 << 20):
            h.update(chunk)
    if p.returncode:
        raise RuntimeError(f"{cmd}: exit {p.returncode}")
    return h.hexdigest()


def file_digest(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=3, help="rounds (each figure is a median of n)")
    ap.add_argument("--mb", type=int, default=300, help="MB of 100-byte lines per container")
    ap.add_argument("--mb10", type=int, default=100, help="MB of 10-byte lines per container")
    ap.add_argument("--no-read", action="store_true", help="only the write figures")
    ap.add_argument("--no-verify", action="store_true", help="skip the byte-for-byte check of shimctl logs")
    a = ap.parse_args()
    if os.geteuid() != 0:
        print("bench/logs.py: run as root", file=sys.stderr)
        return 2
    if os.environ.get("BENCH_LOGS_REAPER") is None and shutil.which("tini"):
        os.environ["BENCH_LOGS_REAPER"] = "tini"
        os.execvp("tini", ["tini", "-s", "--", sys.executable, *sys.argv])
    subprocess.run([sys.executable, "-m", "compileall", "-q", "shimd", "shimproto", "manager", "shimctl", "runtime"],
                   cwd=REPO, check=True, stdout=subprocess.DEVNULL)
    base = tempfile.mkdtemp(prefix="shimd-bench-logs-", dir="/var/tmp")
    s = None
    try:
        s = Shimd(base)
        s.api.call("create", {"spec": {"args": ["true"], "id": "warmup", "image": "busybox"}, "start": False})
        s.remove("warmup")
        rootfs = os.path.join(base, "rootfs")
        subprocess.run(["cp", "-a", os.path.join(s.root, "images", "busybox", "rootfs"), rootfs], check=True)
        os.makedirs(os.path.join(rootfs, "data"))
        data = {100: (os.path.join(rootfs, "data", "l100"), a.mb * MB), 10: (os.path.join(rootfs, "data", "l10"),
                                                                             a.mb10 * MB)}
        for width, (path, size) in data.items():
            make_lines(path, size, width)
        out = os.path.join(base, "cat.out")
        res: dict[str, list[float]] = {}

        def add(key: str, seconds: float, size: int) -> None:
            res.setdefault(key, []).append(size / seconds / MB)

        for r in range(a.n):
            for width, (path, size) in data.items():
                add(f"gen{width}", timed(f"{BUSYBOX} cat {path} > /dev/null", shell=True), size)
                add(f"cat{width}", timed(f"{BUSYBOX} cat {path} | cat > {out}", shell=True), size)
                os.unlink(out)
                id = f"w{width}-{r}"
                s.create(id, rootfs, ["cat", f"/data/l{width}"])
                add(f"start{width}", s.start_and_wait(id), size)
                add(f"shim{width}", s.copy_seconds(id), size)
                add(f"catlog{width}", timed(f"cat {' '.join(s.log_files(id))} > {out}", shell=True), size)
                os.unlink(out)
                if width == 10 or a.no_read:
                    s.remove(id)
                    continue
                files = s.log_files(id)
                add("catlog", timed(["cat", *files]), size)
                add("logs", timed(s.ctl("logs", id)), size)
                if r == 0 and not a.no_verify:
                    if digest(s.ctl("logs", id)) != file_digest(path):
                        raise RuntimeError(f"shimctl logs {id} differs from {path}")
                res.setdefault("logsize", []).append(sum(os.path.getsize(f) for f in files) / MB)
                s.remove(id)
                add("run", timed(s.ctl("run", "--rm", "--rootfs", rootfs, "cat", "/data/l100")), size)
                id = f"a-{r}"
                s.api.call("create", {"spec": {"args": ["sh", "-c", "read go; cat /data/l100"], "id": id,
                                               "rootfs": rootfs, "stdin": True}, "start": True}, timeout=60)
                os.sync()
                t0 = time.perf_counter()
                subprocess.run(s.ctl("attach", id), input=b"go\n", stdout=subprocess.DEVNULL, check=True, cwd=REPO)
                add("attach", time.perf_counter() - t0, size)
                s.remove(id)
        print(report(res, a))
        return 0
    finally:
        if s is not None:
            s.stop()
        subprocess.run(["umount", "-R", base], capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


def report(res: dict[str, list[float]], a: argparse.Namespace) -> str:
    def med(k: str) -> float:
        return statistics.median(res[k])

    lines = [
        f"Log throughput (bench/logs.py, {time.strftime('%Y-%m-%d')}, {os.cpu_count()} CPUs): medians of {a.n} "
        f"rounds, MB/s (10^6 bytes) of the container's output; {a.mb} MB of 100-byte lines, {a.mb10} MB of "
        "10-byte lines.",
        "",
        "| figure | shimd | floor | shimd / floor |",
        "|---|---|---|---|",
    ]
    for w in (100, 10):
        lines.append(f"| write {w}-byte lines into the CRI log (detached `cat` of a file) | {med(f'shim{w}'):.0f} | "
                     f"{med(f'cat{w}'):.0f} (`cat` into a file; generator alone {med(f'gen{w}'):.0f}) | "
                     f"{med(f'shim{w}') / med(f'cat{w}'):.2f} |")
        lines.append(f"| ... its log's bytes alone, copied by `cat` into a file (a ceiling for any CRI writer) | "
                     f"{med(f'catlog{w}'):.0f} | {med(f'cat{w}'):.0f} | {med(f'catlog{w}') / med(f'cat{w}'):.2f} |")
        lines.append(f"| the same, from the API's `start` to its exit seen by `wait` | {med(f'start{w}'):.0f} | "
                     f"{med(f'cat{w}'):.0f} | {med(f'start{w}') / med(f'cat{w}'):.2f} |")
    if "logs" in res:
        lines.append(f"| `shimctl logs` to /dev/null ({med('logsize'):.0f} MB of log) | {med('logs'):.0f} | "
                     f"{med('catlog'):.0f} (`cat` of the log files) | {med('logs') / med('catlog'):.2f} |")
        lines.append(f"| attached `shimctl run --rm ... cat` to /dev/null, start to exit | {med('run'):.0f} | "
                     f"{med('catlog'):.0f} | {med('run') / med('catlog'):.2f} |")
        lines.append(f"| `shimctl attach` to a container that then runs `cat`, to its exit | {med('attach'):.0f} | "
                     f"{med('catlog'):.0f} | {med('attach') / med('catlog'):.2f} |")
    lines += ["", "Every round (MB/s): " + "; ".join(f"{k} {' '.join(f'{v:.0f}' for v in vs)}"
                                              for k, vs in res.items() if k != "logsize")]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
