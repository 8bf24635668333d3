"""The container log: every byte the container writes reaches the CRI log once and in order, whatever happens to
the manager; rotation keeps what it promises to keep; an external rotation is followed after reopen_log; nobody
reading (or reading slowly) never slows the container; stdout/stderr and partial lines are told apart.

The logs are checked by parsing the CRI files in the test itself (streamed, never loaded whole) and through
`shimctl logs`."""

from __future__ import annotations

import hashlib
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterable, Iterator
from datetime import datetime

import psutil
import pytest

from shimproto.client import Client
from tests.harness import PY, REPO, wait_for

MB = 1 << 20
TS_LEN = len("2026-01-02T03:04:05.123456789Z")


# --- reading CRI logs ------------------------------------------------------------------------------------------

def log_dir(env, id: str) -> str:
    return os.path.join(env.root, "containers", id)


def log_path(env, id: str) -> str:
    return os.path.join(log_dir(env, id), "container.log")


def log_size(env, id: str) -> int:
    try:
        return os.path.getsize(log_path(env, id))
    except FileNotFoundError:
        return 0


def rotated_files(env, id: str) -> list[str]:
    """The log files of a container, oldest first: container.log.K ... container.log.1, container.log."""
    d = log_dir(env, id)
    nums = sorted((int(n.rsplit(".", 1)[1]) for n in os.listdir(d)
                   if n.startswith("container.log.") and n.rsplit(".", 1)[1].isdigit()), reverse=True)
    return [os.path.join(d, f"container.log.{n}") for n in nums] + [log_path(env, id)]


def records(path: str) -> Iterator[tuple[bytes, bytes, bytes]]:
    """(stream, tag, text) of every record of one CRI file, streamed; checks each record's shape."""
    with open(path, "rb", buffering=4 * MB) as f:
        for n, rec in enumerate(f):
            assert rec.endswith(b"\n"), f"{path}: record {n} is torn: {rec[:80]!r}"
            ts, stream, tag, text = rec[:-1].split(b" ", 3)
            assert len(ts) == TS_LEN and ts[10:11] == b"T" and ts[-1:] == b"Z", f"{path}:{n}: bad time {rec[:80]!r}"
            assert stream in (b"stdout", b"stderr") and tag in (b"F", b"P"), f"{path}:{n}: bad record {rec[:80]!r}"
            yield stream, tag, text


def lines_of(paths: Iterable[str], stream: bytes = b"stdout") -> Iterator[bytes]:
    """The complete lines of one stream across CRI files in order, P fragments joined to what follows them. A
    fragment still open at the end is yielded too (the last line had no newline)."""
    partial: list[bytes] = []
    for path in paths:
        for s, tag, text in records(path):
            if s != stream:
                continue
            if tag == b"P":
                partial.append(text)
            elif partial:
                partial.append(text)
                yield b"".join(partial)
                partial = []
            else:
                yield text
    if partial:
        yield b"".join(partial)


def check_sequence(lines: Iterable[bytes], first: int, last: int | None, what: str) -> tuple[int, int]:
    """Lines must be exactly first, first+1, ... (..last when given): none missing, none repeated, in order.
    Returns (number of lines, bytes of output they stand for)."""
    want = first
    nbytes = 0
    for line in lines:
        if line != b"%d" % want:
            raise AssertionError(f"{what}: line #{want - first + 1} is {line[:40]!r}, expected {want}")
        want += 1
        nbytes += len(line) + 1
    if last is not None:
        assert want == last + 1, f"{what}: ends at {want - 1}, expected {last} ({last + 1 - want} lines missing)"
    return want - first, nbytes


# One CRI record of stdout (the newline before it included), its text captured: what the shim writes, checked whole.
_F_HEAD = re.compile(rb"\n\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z stdout F ")
_P_RECORD = re.compile(rb"(?<=\n)\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z stdout P ([^\n]*)\n")


def stdout_text(paths: Iterable[str], chunk: int = 64 * MB) -> Iterator[bytes]:
    """The stdout text of CRI files, in pieces, by two regex passes over whole chunks of records instead of a loop
    over lines (13 million lines took 41 s that way): F headers out, then P records joined to what follows them.
    Every record must be one of those two shapes (a stderr or malformed one fails the count)."""
    for path in paths:
        with open(path, "rb") as f:
            rest = b""
            while True:
                data = f.read(chunk)
                if not data:
                    assert not rest, f"{path}: a torn record at the end: {rest[:80]!r}"
                    break
                buf = rest + data
                end = buf.rfind(b"\n") + 1
                body, rest = b"\n" + buf[:end], buf[end:]
                text, nf = _F_HEAD.subn(b"\n", body)
                text, np_ = _P_RECORD.subn(rb"\1", text)
                records = body.count(b"\n") - 1
                assert nf + np_ == records, f"{path}: {records - nf - np_} of {records} records are not stdout F/P"
                yield text[1:]


def check_sequence_fast(pieces: Iterable[bytes], first: int, last: int, what: str) -> tuple[int, int]:
    """check_sequence of the text in pieces against `seq first last` by digest; (lines, bytes) as it gives."""
    got, want, nbytes = hashlib.sha256(), hashlib.sha256(), 0
    for piece in pieces:
        got.update(piece)
        nbytes += len(piece)
    for lo in range(first, last + 1, 1_000_000):
        want.update(b"".join(b"%d\n" % i for i in range(lo, min(lo + 1_000_000, last + 1))))
    assert got.digest() == want.digest(), f"{what}: not `seq {first} {last}` ({nbytes} bytes): check_sequence " \
                                          f"names the first line that differs"
    return last - first + 1, nbytes


def file_pieces(path: str, chunk: int = 64 * MB) -> Iterator[bytes]:
    with open(path, "rb") as f:
        while data := f.read(chunk):
            yield data


def seq_bytes(n: int) -> int:
    """Bytes `seq 1 n` writes."""
    total, digits, lo = 0, 1, 1
    while lo <= n:
        hi = min(n, lo * 10 - 1)
        total += (hi - lo + 1) * (digits + 1)
        digits, lo = digits + 1, lo * 10
    return total


def parse_time(s: str) -> float:
    """RFC3339Nano -> unix seconds (microsecond precision is enough here)."""
    head, frac = s.rstrip("Z").split(".")
    return datetime.fromisoformat(head + "+00:00").timestamp() + int(frac[:9].ljust(9, "0")) / 1e9


def run_time(env, id: str) -> float:
    info = env.inspect(id)
    return parse_time(info["exited_at"]) - parse_time(info["started_at"])


def logs_to_file(env, id: str, path: str, timeout: float = 300) -> tuple[float, str]:
    """`shimctl logs ID` with stdout into a file (large outputs never sit in memory): (seconds, stderr)."""
    t0 = time.monotonic()
    with open(path, "wb") as out:
        p = subprocess.run([PY, "-m", "shimctl", "--address", env.sock, "logs", id], stdout=out,
                           stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, cwd=REPO, timeout=timeout)
    assert p.returncode == 0, f"shimctl logs {id} -> {p.returncode}: {p.stderr.decode(errors='replace')}"
    return time.monotonic() - t0, p.stderr.decode(errors="replace")


def plain_lines(path: str) -> Iterator[bytes]:
    with open(path, "rb", buffering=4 * MB) as f:
        for line in f:
            assert line.endswith(b"\n"), f"{path}: last line has no newline: {line[:40]!r}"
            yield line[:-1]


def count_lines(path: str) -> int:
    """Complete records in a file being written (for polling; never trips on a record being appended)."""
    try:
        with open(path, "rb") as f:
            return f.read().count(b"\n")
    except FileNotFoundError:
        return 0


def exit_file(env, id: str) -> str:
    return os.path.join(env.state, "shims", id, "exit.json")


# --- 1. the headline: 100 MB through two manager SIGKILLs --------------------------------------------------------

BIG_N = 13_000_000  # `seq 1 13000000` writes 105,888,888 bytes (> 100 MiB)


@pytest.mark.timeout(600)
def test_100mb_of_numbered_lines_survive_manager_sigkills_every_line_once_in_order(env, tmp_path):
    assert seq_bytes(BIG_N) >= 100 * MB
    id = env.name("big")
    t_run = time.monotonic()
    env.ok("run", "-d", "--name", id, "busybox", "seq", "1", str(BIG_N))
    pid = env.inspect(id)["pid"]

    restarts = []  # (log bytes at the kill, log bytes at the restart, container still running at the kill)
    for rnd in range(2):
        if rnd == 0:
            wait_for(lambda: log_size(env, id) > 20 * MB, 120, "the container to have written 20 MB of log")
        running = psutil.pid_exists(pid)
        if rnd == 0:
            assert running, "seq finished before the manager could be killed: the test proves nothing"
        elif not running:
            print("second round: the container had already exited; killing the manager anyway")
        assert env.kill_manager(signal.SIGKILL) == -signal.SIGKILL
        at_kill = log_size(env, id)
        if running:  # the shim goes on draining the container with no manager at all
            wait_for(lambda k=at_kill: log_size(env, id) > k + 20 * MB or not psutil.pid_exists(pid), 120,
                     "the log to grow while the manager is down")
            if rnd == 0:
                assert log_size(env, id) > at_kill, "the log did not grow while the manager was down"
        at_start = log_size(env, id)
        env.start_manager()
        restarts.append((at_kill, at_start, running))

    assert env.ok("wait", id, timeout=300).out.strip() == "0"
    secs = run_time(env, id)
    data = seq_bytes(BIG_N)
    print(f"\n{data / 1e6:.1f} MB of output in {secs:.2f}s of container life: {data / MB / secs:.1f} MiB/s "
          f"({time.monotonic() - t_run:.1f}s from run to wait returning)")
    for n, (k, s, r) in enumerate(restarts, 1):
        print(f"  manager kill {n}: log at {k / MB:.0f} MiB, restarted at {s / MB:.0f} MiB (container running: {r})")
    assert any(r and s > k for k, s, r in restarts)

    files = rotated_files(env, id)
    assert files == [log_path(env, id)], f"no rotation was asked for, yet: {files}"
    size = os.path.getsize(log_path(env, id))
    t0 = time.monotonic()
    count, nbytes = check_sequence_fast(stdout_text(files), 1, BIG_N, "container.log")  # stdout only: no stderr
    print(f"  parsed {size / MB:.0f} MiB of CRI log in {time.monotonic() - t0:.1f}s: {count} lines, once each, "
          f"in order")
    assert nbytes == data

    # the same through the API: every line once, in order
    out = str(tmp_path / "logs.out")
    secs, err = logs_to_file(env, id, out, timeout=400)
    print(f"  shimctl logs: {data / 1e6:.0f} MB in {secs:.1f}s ({data / MB / secs:.1f} MiB/s)")
    assert err == ""
    assert check_sequence_fast(file_pieces(out), 1, BIG_N, "shimctl logs") == (BIG_N, data)
    os.unlink(out)
    env.ok("rm", id)


# --- 2. rotation -----------------------------------------------------------------------------------------------

ROT_N = 60_000  # 348,895 bytes of output, about 2.7 MB of CRI records: some 40 files of 64 KiB
MAX_SIZE = 64 * 1024


def run_rotating(env, suffix: str, max_file: int, n: int = ROT_N) -> str:
    id = env.name(suffix)
    env.ok("run", "-d", "--name", id, "--log-opt", "max-size=64k", "--log-opt", f"max-file={max_file}",
           "busybox", "seq", "1", str(n))
    assert env.ok("wait", id, timeout=120).out.strip() == "0"  # never blocked by rotation
    return id


def test_rotation_keeps_every_line_in_numbered_files(env, tmp_path):
    id = run_rotating(env, "rot", 200)
    files = rotated_files(env, id)
    names = [os.path.basename(f) for f in files]
    print(f"\n{len(files)} files: {names[:3]} ... {names[-3:]}; sizes {[os.path.getsize(f) for f in files[:5]]} ...")
    assert len(files) >= 4, f"the log did not rotate several times: {names}"
    assert names[:-1] == [f"container.log.{n}" for n in range(len(files) - 1, 0, -1)]  # numbered without gaps
    # the files in order, oldest first, hold the whole sequence
    assert check_sequence(lines_of(files), 1, ROT_N, "rotated files") == (ROT_N, seq_bytes(ROT_N))
    # and so does the API, across all of them
    out = str(tmp_path / "logs.out")
    logs_to_file(env, id, out)
    assert check_sequence(plain_lines(out), 1, ROT_N, "shimctl logs") == (ROT_N, seq_bytes(ROT_N))
    env.ok("rm", id)


def test_rotated_files_do_not_exceed_max_size_by_more_than_one_record(env):
    id = run_rotating(env, "size", 200)
    files = rotated_files(env, id)
    assert len(files) >= 4, f"the log did not rotate several times: {[os.path.basename(f) for f in files]}"
    too_big = []
    for f in files:
        longest = 0
        with open(f, "rb") as fh:
            for rec in fh:
                longest = max(longest, len(rec))
        if os.path.getsize(f) > MAX_SIZE + longest:
            too_big.append(f"{os.path.basename(f)}: {os.path.getsize(f)} bytes (max-size {MAX_SIZE}, "
                           f"longest record {longest})")
    assert not too_big, (f"{len(too_big)} of {len(files)} files exceed max-size by more than one record:\n  "
                         + "\n  ".join(too_big))
    env.ok("rm", id)


def test_small_max_file_drops_the_oldest_data_and_logs_still_works(env, tmp_path):
    n = 200_000  # far more than 3 files of 64 KiB hold (and than 3 of any size the writer might make)
    t0 = time.monotonic()
    id = run_rotating(env, "drop", 3, n)
    print(f"\nseq 1 {n} with max-file=3 finished in {time.monotonic() - t0:.2f}s (run to wait)")
    files = rotated_files(env, id)
    names = sorted(os.listdir(log_dir(env, id)))
    assert [os.path.basename(f) for f in files] == ["container.log.2", "container.log.1", "container.log"], names
    assert [x for x in names if x.startswith("container.log")] == ["container.log", "container.log.1",
                                                                   "container.log.2"]

    # what is kept is a suffix of the sequence, ending at n; its first line may be the tail of a line whose
    # start was in a dropped file
    kept = list(lines_of(files))
    assert kept and kept[-1] == b"%d" % n
    first = int(kept[1])
    assert (b"%d" % (first - 1)).endswith(kept[0]), f"first kept line {kept[0]!r} is not a tail of {first - 1}"
    check_sequence(kept[1:], first, n, "kept files")
    assert first > 2, "nothing was dropped"

    out = str(tmp_path / "logs.out")
    logs_to_file(env, id, out)
    with open(out, "rb") as f:
        got = f.read().split(b"\n")
    assert got.pop() == b""
    assert got == kept, "shimctl logs does not return what the kept files hold"
    env.ok("rm", id)


# --- 3. reopen after an external rotation ------------------------------------------------------------------------

TICKER = "i=0; while true; do echo $i; i=$((i+1)); sleep 0.02; done"


def test_reopen_log_after_an_external_tool_moved_the_file(env, tmp_path):
    id = env.name("reopen")
    env.ok("run", "-d", "--name", id, "busybox", "sh", "-c", TICKER)
    path = log_path(env, id)
    moved = path + ".moved"
    wait_for(lambda: count_lines(path) >= 20, 20, "20 lines in the log")

    os.rename(path, moved)  # as logrotate does (no copytruncate)
    wait_for(lambda: count_lines(moved) >= 30, 20, "the shim to go on writing into the moved file")
    assert not os.path.exists(path)
    c = Client(env.sock)
    try:
        c.call("reopen_log", {"id": id}, timeout=15)
    finally:
        c.close()
    wait_for(lambda: count_lines(path) >= 20, 20,
             "20 lines in the new container.log")
    env.ok("kill", id)
    assert env.ok("wait", id).out.strip() == "137"

    old, new = list(lines_of([moved])), list(lines_of([path]))
    print(f"\nmoved file: lines 0..{old[-1].decode()}, new file: {new[0].decode()}..{new[-1].decode()}")
    n_old, _ = check_sequence(old, 0, None, "moved file")
    check_sequence(new, n_old, None, "new file")  # the new file goes on exactly where the moved one stopped
    assert n_old >= 30 and len(new) >= 20

    # the API still answers, in order, and has everything written since the reopen
    out = str(tmp_path / "logs.out")
    logs_to_file(env, id, out)
    got = list(plain_lines(out))
    assert got, "shimctl logs returned nothing after reopen_log"
    check_sequence(got, int(got[0]), int(new[-1]), "shimctl logs after reopen_log")
    assert int(got[0]) <= int(new[0])
    env.ok("rm", id)


PADDED_TICKER = ("pad=$(printf '%2000s' '' | tr ' ' x); i=0; "
                 "while true; do echo \"$i $pad\"; i=$((i+1)); sleep 0.01; done")


def numbers(records: list) -> list[int]:
    text = b"".join(data for _, data in records)
    return [int(line.split(b" ", 1)[0]) for line in text.split(b"\n") if line]


def test_a_page_covers_at_most_max_bytes_of_the_log_within_its_bounds(env):
    """max_bytes (what the CLI asks while it reads the file itself) bounds each reply to 4 KiB .. 1 MiB of the
    log; paging with it still gives every line once, in order."""
    id = env.name("pagesize")
    env.ok("run", "-d", "--name", id, "busybox", "seq", "1", "30000")  # 168,894 bytes of output
    assert env.ok("wait", id).out.strip() == "0"
    c = Client(env.sock)
    try:
        for asked, most in ((4096, 4096), (0, 4096), (-5, 4096), (10**15, 1 << 20)):
            cursor, records, steps = 0, [], []
            while True:
                res = c.call("logs", {"id": id, "cursor": cursor, "max_bytes": asked}, timeout=30)
                records += res["records"]  # a line may be split into records (P, then F) on two pages
                steps.append(res["cursor"] - cursor)  # one file: the cursor moves by the log bytes covered
                cursor = res["cursor"]
                if res["eof"]:
                    break
            assert numbers(records) == list(range(1, 30001)), asked
            assert max(steps) <= most and max(steps) > most // 2, (asked, max(steps))
    finally:
        c.close()
    env.ok("rm", id)


def test_a_reader_cursor_stays_valid_across_reopen_of_a_rotating_log(env):
    """A reader's cursor taken before a reopen_log must never lead it back to older lines: the rotated files
    are renumbered only by rotation, and a reopen must not shift which file a generation lives in."""
    id = env.name("reopenrot")
    env.ok("run", "-d", "--name", id, "--log-opt", "max-size=64k", "--log-opt", "max-file=50",
           "busybox", "sh", "-c", PADDED_TICKER)
    path = log_path(env, id)
    wait_for(lambda: os.path.exists(path + ".2"), 30, "the log to rotate twice")
    c = Client(env.sock)
    try:
        cursor, seen = 0, []
        while True:  # read everything so far, as `logs -f` would
            res = c.call("logs", {"id": id, "cursor": cursor}, timeout=30)
            seen += numbers(res["records"])
            cursor = res["cursor"]
            if res["eof"]:
                break
        wait_for(lambda: count_lines(path) >= 3, 10, "the current file to have a few lines")
        os.rename(path, path + ".moved")
        c.call("reopen_log", {"id": id}, timeout=15)
        wait_for(lambda: count_lines(path) >= 5, 20, "lines in the new container.log")
        res = c.call("logs", {"id": id, "cursor": cursor}, timeout=30)
        after = numbers(res["records"])
        while not res["eof"]:
            res = c.call("logs", {"id": id, "cursor": res["cursor"]}, timeout=30)
            after += numbers(res["records"])
    finally:
        c.close()
    env.ok("kill", id)
    env.ok("wait", id)
    assert seen == list(range(len(seen)))
    print(f"\nbefore the reopen the reader had 0..{seen[-1]}; from its cursor it then got {after[:5]} ... {after[-3:]}")
    assert after, "nothing after the reopen"
    assert after[0] > seen[-1], (f"after reopen_log, the reader's cursor led it back to older lines: it had read "
                                 f"up to {seen[-1]}, then got {after[:10]} ...")
    assert after == list(range(after[0], after[0] + len(after))), "lines after the reopen are not contiguous"
    env.ok("rm", id)


# --- 4. absent and slow readers ----------------------------------------------------------------------------------

DRAIN_N = 6_500_000  # 50,888,895 bytes of output


@pytest.mark.timeout(400)
def test_the_shim_drains_50mb_with_the_manager_down_and_nobody_reading(env):
    assert seq_bytes(DRAIN_N) >= 48 * MB
    id = env.name("drain")
    env.ok("run", "-d", "--name", id, "busybox", "seq", "1", str(DRAIN_N))
    pid = env.inspect(id)["pid"]
    assert env.kill_manager(signal.SIGKILL) == -signal.SIGKILL
    t0 = time.monotonic()
    assert not os.path.exists(exit_file(env, id)), "seq had finished before the manager went down"
    # nobody reads anything: the container can only finish if the shim itself keeps emptying its pipes
    wait_for(lambda: os.path.exists(exit_file(env, id)), 120, "the exit to be recorded with the manager down")
    secs = time.monotonic() - t0
    assert not psutil.pid_exists(pid)
    print(f"\n{seq_bytes(DRAIN_N) / 1e6:.1f} MB written and the exit recorded {secs:.1f}s after the manager was "
          f"killed, with no manager and no reader")

    env.start_manager()
    assert env.ok("wait", id).out.strip() == "0"
    print(f"  container life {run_time(env, id):.2f}s: {seq_bytes(DRAIN_N) / MB / run_time(env, id):.1f} MiB/s")
    assert check_sequence_fast(stdout_text([log_path(env, id)]), 1, DRAIN_N, "container.log") == \
        (DRAIN_N, seq_bytes(DRAIN_N))
    env.ok("rm", id)


SLOW_N = 3_000_000  # about 23 MB of output
SLOWDOWN = 3.0  # generous: the same writer beside a slow reader may take at most this many times as long


def slow_reader_run(env, suffix: str) -> tuple[str, float, int, list[bytes], object]:
    """seq 1 SLOW_N beside a reader taking one page (up to 1 MiB) every 100 ms, far slower than the container writes:
    (id, container life in s, bytes the reader had when the exit was recorded, what it read, its cursor)."""
    id = env.name(suffix)
    env.ok("run", "-d", "--name", id, "busybox", "seq", "1", str(SLOW_N))
    c = Client(env.sock)
    try:
        cursor, got = 0, []
        t0 = time.monotonic()
        while not os.path.exists(exit_file(env, id)):
            assert time.monotonic() - t0 < 120, "the container did not finish within 120 s next to a slow reader"
            res = c.call("logs", {"id": id, "cursor": cursor}, timeout=30)
            for stream, data in res["records"]:
                assert stream == "stdout"
                got.append(data)
            cursor = res["cursor"]
            time.sleep(0.1)  # the reader's pace (the point of the test), not a wait for a condition
    finally:
        c.close()
    assert env.ok("wait", id).out.strip() == "0"
    return id, run_time(env, id), sum(map(len, got)), got, cursor


def no_reader_run(env, suffix: str) -> tuple[str, float]:
    id = env.name(suffix)
    env.ok("run", "-d", "--name", id, "busybox", "seq", "1", str(SLOW_N))
    assert env.ok("wait", id, timeout=120).out.strip() == "0"
    return id, run_time(env, id)


@pytest.mark.timeout(300)
def test_a_slow_reader_does_not_slow_the_container(env):
    # the same writer with and without a slow reader, alternated so that a change in the machine's load falls on
    # both; compared by the container's own life (started_at to exited_at)
    base, slow = [], []
    for rnd in range(3):
        id, secs = no_reader_run(env, f"alone{rnd}")
        base.append(secs)
        env.ok("rm", id)
        id, secs, read_at_exit, got, cursor = slow_reader_run(env, f"slow{rnd}")
        slow.append(secs)
        # the condition that needs no clock: the container wrote everything while the reader had read far less
        assert read_at_exit < seq_bytes(SLOW_N) // 2, \
            f"the reader kept up ({read_at_exit} of {seq_bytes(SLOW_N)} bytes at the exit): this proves nothing"
        if rnd == 0:
            # the reader, still behind, goes on from its cursor and gets the rest, in order, with nothing lost
            c = Client(env.sock)
            try:
                while True:
                    res = c.call("logs", {"id": id, "cursor": cursor}, timeout=60)
                    got.extend(data for _, data in res["records"])
                    cursor = res["cursor"]
                    if res["eof"]:
                        break
            finally:
                c.close()
            text = b"".join(got)
            assert text.endswith(b"\n")
            assert check_sequence(text[:-1].split(b"\n"), 1, SLOW_N, "a slow reader's pages") == \
                (SLOW_N, seq_bytes(SLOW_N))
        print(f"\nround {rnd}: container life {base[-1]:.2f}s with no reader, {slow[-1]:.2f}s beside a slow reader "
              f"(which had {read_at_exit / MB:.1f} of {seq_bytes(SLOW_N) / MB:.1f} MiB at the exit)")
        env.ok("rm", id)
    assert sum(slow) < SLOWDOWN * sum(base), \
        f"a slow reader slowed the container: {slow} s beside it vs {base} s with no reader (> {SLOWDOWN}x)"


def waiting_for_a_reply(pid: int) -> bool:
    """pid's main thread is blocked in shimproto.client.Client._reply: poll(2) on its socket and its monitor (2 fds)
    with a long timeout. Between calls, or waiting to send (Client._wait_writable), it polls one fd for <= 200 ms;
    so this is true only while a request has been sent and its answer is awaited."""
    try:
        with open(f"/proc/{pid}/task/{pid}/syscall") as f:
            fields = f.read().split()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return len(fields) >= 4 and fields[0] == "7" and int(fields[2], 16) == 2 and int(fields[3], 16) > 1000


FOLLOWED_AFTER = 200
QUIET_UNTIL_USR1 = ("trap 'go=1' USR1; echo 0; while [ -z \"$go\" ]; do sleep 0.05; done; "
                    f"i=1; while [ $i -le {FOLLOWED_AFTER} ]; do echo $i; i=$((i+1)); done")


def test_logs_follow_carries_on_across_a_manager_sigkill(env, tmp_path):
    """docs/architecture.md: a client (`shimctl wait`, `logs -f`) simply carries on when the manager is restarted
    under it, here with its long-poll in flight when the manager is SIGKILLed."""
    if os.uname().machine != "x86_64":
        pytest.skip("tells a long-poll in flight from poll(2)'s arguments in /proc/PID/syscall (x86_64 numbering)")
    id = env.name("follow")
    # one line, then nothing until we say so: the follower's next long-poll cannot be answered before the kill
    env.ok("run", "-d", "--name", id, "busybox", "sh", "-c", QUIET_UNTIL_USR1)
    pid = env.inspect(id)["pid"]
    out, err = tmp_path / "follow.out", tmp_path / "follow.err"
    with open(out, "wb") as o, open(err, "wb") as e:
        p = subprocess.Popen([PY, "-m", "shimctl", "--address", env.sock, "logs", "-f", id], stdout=o, stderr=e,
                             stdin=subprocess.DEVNULL, cwd=REPO)
    try:
        wait_for(lambda: out.read_bytes() == b"0\n", 20, "the follower to print the first line")
        wait_for(lambda: waiting_for_a_reply(p.pid), 20, "the follower to wait on its next long-poll")
        assert out.read_bytes() == b"0\n"
        env.kill_manager(signal.SIGKILL)
        assert p.poll() is None, f"shimctl logs -f exited {p.returncode} with the manager: {err.read_text()}"
        env.start_manager()
        os.kill(pid, signal.SIGUSR1)  # output only now, after the restart
        t0 = time.monotonic()
        assert p.wait(60) == 0, f"shimctl logs -f -> {p.returncode}: {err.read_text().strip()}"
        print(f"\nthe follower printed the rest and returned {time.monotonic() - t0:.2f}s after the output began")
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert env.ok("wait", id).out.strip() == "0"
    got = out.read_bytes().split(b"\n")
    assert got.pop() == b"", "the follower's last line has no newline"
    # everything written after the restart, exactly once, in order, and nothing more
    check_sequence(got, 0, FOLLOWED_AFTER, "shimctl logs -f across the restart")
    assert err.read_text() == ""
    env.ok("rm", id)


# --- 5. streams and partial lines --------------------------------------------------------------------------------

def test_stdout_stderr_and_partial_lines(env):
    id = env.name("streams")
    env.ok("run", "-d", "--name", id, "busybox", "sh", "-c", "printf a; sleep 0.1; printf 'b\\n'; echo err >&2")
    assert env.ok("wait", id).out.strip() == "0"
    r = env.ok("logs", id)
    assert (r.out, r.err) == ("ab\n", "err\n")

    recs = list(records(log_path(env, id)))
    assert (b"stdout", b"P", b"a") in recs, recs
    assert [r for r in recs if r[0] == b"stdout"] == [(b"stdout", b"P", b"a"), (b"stdout", b"F", b"b")]
    assert [r for r in recs if r[0] == b"stderr"] == [(b"stderr", b"F", b"err")]
    assert list(lines_of([log_path(env, id)])) == [b"ab"]
    assert list(lines_of([log_path(env, id)], b"stderr")) == [b"err"]
    env.ok("rm", id)
