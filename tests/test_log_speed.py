"""The fast log paths say exactly what the simple ones said: the writer's records (one bytes.replace per chunk,
written with writev) and the readers' pages (parsed per run of records with one header) are compared byte for byte
with per-line reference implementations on made-up logs (several streams, partial lines, empty lines, equal
times, torn and malformed records, every filter), and end to end through runc: a container's output read back by
`shimctl logs`, an attached `shimctl run` and `attach` is the output, every byte, stdout and stderr apart, across
rotation. No timing here: bench/logs.py measures the rates."""

from __future__ import annotations

import hashlib
import os
import random
import subprocess
import time

import pytest

from shimctl import stream
from shimd.io.log import LogWriter
from shimproto.cri import ReadOpts, format_records, parse_page, parse_ts
from shimproto.model import rfc3339
from tests.harness import PY, REPO, wait_for

# --- the simple implementations the fast ones replaced ----------------------------------------------------------


def ref_format(stream: str, data: bytes, now_ns: int) -> bytes:
    ts = rfc3339(now_ns).encode()
    lines = data.split(b"\n")
    tail = lines.pop()
    out = [ts + b" " + stream.encode() + b" F " + line + b"\n" for line in lines]
    if tail:
        out.append(ts + b" " + stream.encode() + b" P " + tail + b"\n")
    return b"".join(out)


def ref_parse(buf: bytes, opts: ReadOpts) -> tuple[list[list], int, bool]:
    end = buf.rfind(b"\n")
    if end < 0:
        return [], 0, False
    out: list[list] = []
    timed = opts.needs_time
    used = 0
    for line in buf[: end + 1].split(b"\n")[:-1]:
        parts = line.split(b" ", 3)
        parts += [b""] * (4 - len(parts))
        raw, stream, tag, text = parts
        ns = 0
        if timed:
            ns = parse_ts(raw)
            if opts.until and ns > opts.until:
                return _groups(out, opts), used, True
            used += len(line) + 1
            if ns < opts.since:
                continue
        if tag == b"F":
            text += b"\n"
        if out and out[-1][0] == stream and (not opts.timestamps or out[-1][2] == ns):
            out[-1][1].append(text)
        else:
            out.append([stream, [text], ns])
    return _groups(out, opts), end + 1 if not timed else used, False


def _groups(groups: list[list], opts: ReadOpts) -> list[list]:
    if opts.timestamps:
        return [[s.decode(errors="replace"), b"".join(p), ns] for s, p, ns in groups]
    return [[s.decode(errors="replace"), b"".join(p)] for s, p, _ in groups]


# --- made-up output and logs -------------------------------------------------------------------------------------

BASE_NS = 1_764_560_000_123_456_789


def chunk(rng: random.Random) -> bytes:
    """Some output as a process writes it: short and long lines, empty lines, often an unfinished last line."""
    kind = rng.random()
    if kind < 0.3:
        width = rng.choice([1, 2, 10, 100])
        data = b"".join(b"%0*d\n" % (width - 1, i % 10 ** max(1, width - 1)) if width > 1 else b"\n"
                        for i in range(rng.randint(1, 300)))
    else:
        words = [b"", b"a", b"xyz", b"F", b"P", b"stdout", b" ", b"2026-01-02T03:04:05.123456789Z stdout F x",
                 bytes(rng.randrange(256) for _ in range(rng.randint(1, 40)))]
        data = b"".join(rng.choice(words) + rng.choice([b"", b"\n", b"\n\n"]) for _ in range(rng.randint(1, 40)))
    return data


def made_up_log(rng: random.Random) -> bytes:
    """Records as the writer makes them: several streams, times that repeat (equal headers that are not
    neighbours), a malformed line now and then."""
    out, ns = [], BASE_NS
    for _ in range(rng.randint(1, 30)):
        if rng.random() < 0.6:
            ns += rng.choice([0, 1, 999, 10**9 + 7])
        data = chunk(rng)
        out.append(format_records(rng.choice(["stdout", "stdout", "stderr"]), data, ns))
        if rng.random() < 0.05:
            out.append(rng.choice([b"garbage\n", b"a b\n", b"a b c\n", b"\n", b"t stdout F\n", b"t stdout Q x\n"]))
    return b"".join(out)


@pytest.mark.parametrize("seed", range(300))
def test_records_are_what_the_per_line_formatter_wrote(seed):
    rng = random.Random(seed)
    for _ in range(20):
        data = chunk(rng)
        stream = rng.choice(["stdout", "stderr"])
        assert format_records(stream, data, BASE_NS + seed) == ref_format(stream, data, BASE_NS + seed), data


def test_records_of_edge_cases():
    for data in (b"", b"a", b"\n", b"\n\n", b"a\n", b"a\nb", b"a\n\nb\n", b"\nx", b"x" * 70000, b"x\n" * 70000):
        assert format_records("stdout", data, BASE_NS) == ref_format("stdout", data, BASE_NS), data[:20]


@pytest.mark.parametrize("seed", range(300))
def test_pages_parse_as_the_per_line_parser_did_with_every_filter(seed):
    rng = random.Random(seed)
    buf = made_up_log(rng)
    times = sorted({parse_ts(line.split(b" ", 1)[0]) for line in buf.split(b"\n") if line})
    cut = rng.choice([len(buf), rng.randrange(len(buf) + 1)])  # a torn record at the end is not a record
    page = buf[:cut]
    mid = rng.choice(times)
    for opts in (ReadOpts(), ReadOpts(timestamps=True), ReadOpts(since=mid), ReadOpts(until=mid),
                 ReadOpts(since=mid, until=mid + 10**9, timestamps=True), ReadOpts(until=BASE_NS - 1)):
        assert parse_page(page, opts) == ref_parse(page, opts), (seed, opts)


@pytest.mark.parametrize("seed", range(300))
def test_the_cli_parses_pages_as_the_shim_does(seed):
    page = made_up_log(random.Random(seed))
    records, used, _ = parse_page(page)
    assert stream.parse_cri(page) == (records, used)


def test_long_runs_of_one_header_with_the_same_header_again_later():
    """One chunk's header comes back after another stream's records (equal times): the run stops at the other."""
    a = format_records("stdout", b"x\n" * 50000, BASE_NS)
    b = format_records("stderr", b"y\n" * 3, BASE_NS)
    c = format_records("stdout", b"z\n" * 70000 + b"tail", BASE_NS)
    for buf in (a + b + a, a + b + c, b + a + b + c + a, a + b"junk\n" + a, a + b"\n" + c):
        for opts in (ReadOpts(), ReadOpts(timestamps=True), ReadOpts(since=BASE_NS)):
            assert parse_page(buf, opts) == ref_parse(buf, opts)
        assert stream.parse_cri(buf) == ref_parse(buf, ReadOpts())[:2]


def test_the_writer_with_rotation_keeps_every_byte(tmp_path):
    """Chunks of every shape through LogWriter.write (writev) with a small max_size: reading all generations back
    gives each stream's output exactly."""
    rng = random.Random(7)
    w = LogWriter(str(tmp_path / "container.log"), max_size=200_000, max_files=1000)
    want = {"stdout": [], "stderr": []}
    for _ in range(400):
        stream = rng.choice(["stdout", "stderr"])
        data = chunk(rng)
        w.write(stream, data)
        want[stream].append(data)
    assert w.gen > 3
    got = {"stdout": [], "stderr": []}
    cur = 0
    while True:
        records, new, _ = w.read(cur, 1 << 16)
        for stream, text in records:
            got[stream].append(text)
        if new == cur:
            break
        cur = new
    w.close()
    for stream in want:
        assert b"".join(got[stream]) == b"".join(want[stream]), stream


class FakeCli:
    """The logs call as the shim answers it, on a LogWriter; `where` may spoil the file it names."""

    def __init__(self, w: LogWriter, where=lambda loc: loc) -> None:
        self.w, self.where, self.calls = w, where, 0
        self.sizes: list[int] = []  # max_bytes of each page asked for (the manager's default: 1 MiB)

    def call(self, method: str, params: dict, timeout: float | None = None) -> dict:
        assert method == "logs"
        self.calls += 1
        cur = params["cursor"]
        if cur == -1:
            return {"records": [], "cursor": self.w.end, "eof": False}
        if params.get("tail", -1) >= 0:
            cur = self.w.tail_cursor(params["tail"])
        self.sizes.append(params.get("max_bytes", 1 << 20))
        records, new, _ = self.w.read(cur, min(self.sizes[-1], 1 << 16))
        eof = self.w.at_end(new)
        return {"records": records, "cursor": new, "eof": eof, **({} if eof else {"file": self.where(
            self.w.locate(new))})}


def printed(cli: FakeCli, **window) -> tuple[bytes, bytes]:
    import io

    p = stream.Printer()
    p.outs = {"stdout": io.BytesIO(), "stderr": io.BytesIO()}
    assert stream.print_logs(cli, "id", False, window=window or None, printer=p)  # type: ignore[arg-type]
    return p.outs["stdout"].getvalue(), p.outs["stderr"].getvalue()


def test_the_cli_reads_on_in_the_file_itself_across_rotation_or_keeps_to_pages_when_it_cannot(tmp_path):
    rng = random.Random(11)
    w = LogWriter(str(tmp_path / "container.log"), max_size=3 << 20, max_files=100)
    want: dict[str, list[bytes]] = {"stdout": [], "stderr": []}
    for _ in range(3000):
        s, data = rng.choice(["stdout", "stdout", "stderr"]), chunk(rng) * rng.randint(1, 8)
        w.write(s, data)
        want[s].append(data)
    long = b"a run longer than the CLI's reads\n" * 100_000 + b"x" * (3 << 20) + b"\n"  # and a line: at once, as
    # another writer might
    w._append(format_records("stdout", long, BASE_NS), len(long))
    want["stdout"].append(long)
    w.write("stdout", b"torn at the end")
    want["stdout"].append(b"torn at the end")
    assert w.gen >= 2
    out, err = b"".join(want["stdout"]), b"".join(want["stderr"])
    local = FakeCli(w)
    assert printed(local) == (out, err)
    spoiled = FakeCli(w, lambda loc: loc[:2] + [loc[2] + 1] + loc[3:])  # never the file it names
    assert printed(spoiled) == (out, err)
    assert local.calls < spoiled.calls / 4  # the file was read here; pages only found the way
    assert set(local.sizes) == {stream.SMALL_PAGE}  # and were small
    # a file by that path that is never the one named: small pages until MISSES of them, then full ones
    assert spoiled.sizes[stream.MISSES + 1:] and set(spoiled.sizes[stream.MISSES + 1:]) == {1 << 20}
    gone = FakeCli(w, lambda loc: [str(tmp_path / "nowhere")] + loc[1:])
    assert printed(gone) == (out, err)
    assert gone.sizes[0] == stream.SMALL_PAGE and set(gone.sizes[2:]) == {1 << 20}  # unreadable here: full pages
    for n in (0, 1, 5, 5000):
        assert printed(FakeCli(w), tail=n) == printed(spoiled, tail=n)
    w.close()


# --- end to end, through runc -------------------------------------------------------------------------------------

def make_output(path: str) -> tuple[bytes, bytes]:
    """A file of every kind of line: 10-byte, 100-byte, empty, one longer than the pipe, bytes that are not
    UTF-8, and no newline at the end. Returns (its contents, its sha256)."""
    rng = random.Random(3)
    parts = [b"%09d\n" % i for i in range(200_000)]
    parts += [b"%099d\n" % i for i in range(50_000)]
    parts += [b"\n"] * 1000 + [b"L" * 300_000 + b"\n", bytes(range(256)).replace(b"\n", b"") + b"\n"]
    parts += [bytes(rng.randrange(1, 256) for _ in range(rng.randint(0, 200))) for _ in range(2000)]
    parts.append(b"the end, no newline")
    data = b"".join(parts)
    with open(path, "wb") as f:
        f.write(data)
    return data, hashlib.sha256(data).digest()


def shimctl(env, *args: str, stdin: bytes | None = None, timeout: float = 120) -> tuple[int, bytes, bytes]:
    p = subprocess.run([PY, "-m", "shimctl", "--address", env.sock, *args], capture_output=True, cwd=REPO,
                       input=stdin, stdin=None if stdin is not None else subprocess.DEVNULL, timeout=timeout)
    return p.returncode, p.stdout, p.stderr


@pytest.fixture
def rootfs(env, tmp_path):
    """A copy of the busybox image with /data/out (made-up output) in it."""
    env.ok("run", "--rm", "busybox", "true")
    root = str(tmp_path / "rootfs")
    subprocess.run(["cp", "-a", os.path.join(env.root, "images", "busybox", "rootfs"), root], check=True)
    os.makedirs(os.path.join(root, "data"))
    data, _ = make_output(os.path.join(root, "data", "out"))
    return root, data


def test_logs_and_an_attached_run_give_back_every_byte_of_stdout_and_stderr(env, rootfs):
    root, data = rootfs
    id = env.name("bytes")
    # the same output on both streams, at once: each must come back whole and apart
    cmd = "cat /data/out & cat /data/out >&2; wait"
    rc, out, err = shimctl(env, "run", "--name", id, "--rootfs", root, "sh", "-c", cmd)
    assert rc == 0, err[-300:]
    assert out == data and err == data
    rc, out, err = shimctl(env, "logs", id)
    assert rc == 0 and out == data and err == data
    env.ok("rm", id)


def test_logs_across_rotation_tail_and_timestamps(env, rootfs):
    root, data = rootfs
    id = env.name("rot")
    env.ok("run", "-d", "--name", id, "--rootfs", root, "--log-opt", "max-size=1m", "--log-opt", "max-file=100",
           "cat", "/data/out")
    assert env.ok("wait", id).out.strip() == "0"
    assert len(os.listdir(os.path.join(env.root, "containers", id))) > 5  # it did rotate
    rc, out, _ = shimctl(env, "logs", id)
    assert rc == 0 and out == data
    lines = data.split(b"\n")
    rc, out, _ = shimctl(env, "logs", "--tail", "3", id)
    assert out == b"\n".join(lines[-3:])
    rc, out, _ = shimctl(env, "logs", "-t", id)
    stamped = out.split(b"\n")
    assert len(stamped) == len(lines)
    for got, line in zip(stamped, lines, strict=True):
        stamp, _, rest = got.partition(b" ")
        assert rest == line and parse_ts(stamp) > 0, got[:80]
    env.ok("rm", id)


def test_attach_follows_a_container_writing_fast_every_byte(env, rootfs):
    root, data = rootfs
    id = env.name("att")
    env.ok("run", "-d", "-i", "--name", id, "--rootfs", root, "sh", "-c", "read go; cat /data/out; cat /data/out")
    wait_for(lambda: env.inspect(id)["status"] == "running", 10, "the container to run")
    time.sleep(0.2)
    rc, out, err = shimctl(env, "attach", id, stdin=b"go\n")
    assert rc == 0, err[-300:]
    assert out == data + data
    env.ok("rm", id)


def test_logs_without_follow_ends_while_the_container_keeps_writing_fast(env, rootfs):
    """logs prints what is there when it reads and returns, even when the log grows faster than it is read."""
    root, data = rootfs
    id = env.name("busy")
    env.ok("run", "-d", "--name", id, "--rootfs", root, "--log-opt", "max-size=1g", "sh", "-c",
           "while :; do cat /data/out; echo; done")
    wait_for(lambda: os.path.getsize(os.path.join(env.root, "containers", id, "container.log")) > 20 << 20, 30,
             "20 MB of log")
    rc, out, err = shimctl(env, "logs", id, timeout=120)
    assert rc == 0, err[-300:]
    assert out.startswith(data + b"\n" + data)
    env.ok("rm", "-f", id)
