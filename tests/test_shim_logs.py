"""The CRI log as readers see it: tail (the last N lines on disk, across rotated files), since/until by each
record's own time, timestamps on records; cursors stay valid and nothing is lost or repeated when a reader carries
on from a filtered or tailed read. Pure: a LogWriter on a temp file, no shim."""

from __future__ import annotations

import pytest

from shimd.io.log import LogWriter, lines_backward
from shimproto.cri import ReadOpts, format_records, parse_page, parse_ts


def _write(w: LogWriter, stream: str, data: bytes, ns: int) -> None:
    """One write at a chosen time (the writer stamps time.time_ns(); tests need known times)."""
    rec = format_records(stream, data, ns)
    w._append(rec, len(data))


def _all(w: LogWriter, cur: int, opts: ReadOpts = ReadOpts(), max_bytes: int = 4096) -> tuple[list, int]:
    out: list = []
    while True:
        records, new, past = w.read(cur, max_bytes, opts)
        out += records
        if past or new == cur:
            return out, new
        cur = new


@pytest.fixture
def log(tmp_path):
    w = LogWriter(str(tmp_path / "container.log"))
    yield w
    w.close()


def test_timestamps_round_trip_to_the_nanosecond():
    ns = 1_700_000_000_123_456_789
    assert parse_ts(format_records("stdout", b"x\n", ns).split(b" ")[0]) == ns
    assert parse_ts(b"2023-11-14T22:13:20Z") == 1_700_000_000 * 10**9
    assert parse_ts(b"garbage") == 0


def test_records_carry_their_time_and_are_merged_only_within_one_write(log):
    _write(log, "stdout", b"a\nb\n", 1000)
    _write(log, "stdout", b"c\n", 2000)
    _write(log, "stderr", b"d", 2000)
    records, _ = _all(log, 0, ReadOpts(timestamps=True))
    assert records == [["stdout", b"a\nb\n", 1000], ["stdout", b"c\n", 2000], ["stderr", b"d", 2000]]
    assert _all(log, 0)[0] == [["stdout", b"a\nb\nc\n"], ["stderr", b"d"]]


def test_since_and_until_keep_only_records_in_range_inclusive(log):
    for n in range(1, 6):
        _write(log, "stdout", f"{n}\n".encode(), n * 1000)
    records, cur = _all(log, 0, ReadOpts(since=2000, until=4000))
    assert records == [["stdout", b"2\n3\n4\n"]]
    rest, _ = _all(log, cur)  # carrying on from the cursor loses nothing after until
    assert rest == [["stdout", b"5\n"]]
    assert _all(log, 0, ReadOpts(since=6000))[0] == []


def test_tail_starts_at_the_last_n_lines_and_counts_an_unfinished_line(log):
    for n in range(10):
        _write(log, "stdout", f"line{n}\n".encode(), n)
    assert _all(log, log.tail_cursor(3))[0] == [["stdout", b"line7\nline8\nline9\n"]]
    assert _all(log, log.tail_cursor(0))[0] == []
    assert _all(log, log.tail_cursor(100))[0][0][1].startswith(b"line0\n")
    _write(log, "stdout", b"frag", 11)  # a P record: an unfinished line counts as one
    _write(log, "stdout", b"ment", 12)
    assert _all(log, log.tail_cursor(2))[0] == [["stdout", b"line9\nfragment"]]


def test_tail_reaches_back_across_rotated_files_and_long_records(tmp_path):
    w = LogWriter(str(tmp_path / "c.log"), max_size=300, max_files=10)
    for n in range(40):
        w.write("stdout", f"{n:02d}\n".encode())
    w.write("stderr", b"x" * 70000 + b"\n")
    assert w.gen > 3
    records, _ = _all(w, w.tail_cursor(5))
    assert records[0] == ["stdout", b"36\n37\n38\n39\n"] and records[1] == ["stderr", b"x" * 70000 + b"\n"]
    w.close()


def test_lines_backward_yields_every_record_with_its_offset(tmp_path):
    path = tmp_path / "f"
    lines = [b"r%d " % n + b"y" * (n * 37 % 200) for n in range(300)]
    data = b"".join(ln + b"\n" for ln in lines)
    path.write_bytes(data + b"torn")
    got = list(lines_backward(str(path), len(data) + 4, block=64))
    assert [ln for _, ln in got] == lines[::-1]
    assert all(data[off:off + len(ln)] == ln for off, ln in got)


def test_since_skips_whole_rotated_files_without_losing_later_records(tmp_path):
    w = LogWriter(str(tmp_path / "c.log"), max_size=200, max_files=50)
    for n in range(100):
        _write(w, "stdout", f"{n:03d}\n".encode(), n)
        if w.size > 150:
            w._rotate()
    records, _ = _all(w, 0, ReadOpts(since=90))
    assert b"".join(r[1] for r in records) == b"".join(f"{n:03d}\n".encode() for n in range(90, 100))
    w.close()


def test_a_filtered_page_with_no_record_still_moves_the_cursor():
    records, used, past = parse_page(format_records("stdout", b"a\nb\n", 5), ReadOpts(since=10))
    assert (records, past) == ([], False) and used > 0
    records, used, past = parse_page(format_records("stdout", b"a\n", 5), ReadOpts(until=1))
    assert (records, used, past) == ([], 0, True)
