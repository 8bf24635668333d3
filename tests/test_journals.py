"""Journals that check their records (issue 14, point 4): shimproto/journal.py frames every record with a length
and a CRC-32; readers keep every record that checks out, resynchronise after damage, and the owner of a file moves
the damage aside (one log line naming the file and the offset) without ever giving out a sequence number twice.
Shown on the reader alone (with hypothesis throwing damage at it) and on a real manager whose events.journal was
damaged while it was down."""

from __future__ import annotations

import os
import signal

import msgpack
from hypothesis import example, given, settings
from hypothesis import strategies as st

from shimproto import journal
from shimproto.client import Client

from .harness import wait_for


def ev(seq: int, id: str = "c1", **more: object) -> dict:
    return {"seq": seq, "type": "start", "id": id, "exec_id": "", "time": 1, **more}


def test_frames_round_trip_and_a_torn_last_frame_is_only_cut_off(tmp_path):
    path = str(tmp_path / "j")
    fd = journal.open_append(path)
    for n in (1, 2, 3):
        journal.append(fd, ev(n))
    os.close(fd)
    whole = open(path, "rb").read()
    with open(path, "ab") as f:
        f.write(journal.frame(ev(4))[:-3])  # a crash mid-write
    r = journal.read(path, journal.is_event)
    assert [x["seq"] for x in r.records] == [1, 2, 3] and r.torn_tail and len(r.bad) == 1
    said: list[str] = []
    records, lost = journal.recover(path, journal.is_event, said.append)
    assert [x["seq"] for x in records] == [1, 2, 3] and lost > 0
    assert open(path, "rb").read() == whole and not os.path.exists(path + ".bad")
    assert len(said) == 1 and "unfinished last record" in said[0] and path in said[0]


def test_damage_in_the_middle_keeps_the_records_after_it_and_is_moved_aside(tmp_path):
    path = str(tmp_path / "j")
    good = [journal.frame(ev(n)) for n in (1, 2, 3, 4)]
    junk = b"\x00garbage\xc1\xff\xff\xff\xffnot a frame"
    with open(path, "wb") as f:
        f.write(good[0] + good[1] + junk + good[2] + good[3])
    said: list[str] = []
    records, lost = journal.recover(path, journal.is_event, said.append)
    assert [x["seq"] for x in records] == [1, 2, 3, 4]
    assert lost == len(junk) and journal.next_after(records, "seq", lost) > 4 + 1
    off = len(good[0] + good[1])
    assert len(said) == 1 and f"offset {off}" in said[0] and path in said[0], said
    assert junk in open(path + ".bad", "rb").read()  # kept for a human, out of the journal
    assert open(path, "rb").read() == b"".join(good)  # the next start reads a clean file
    assert journal.recover(path, journal.is_event, said.append)[1] == 0 and len(said) == 1


def test_a_record_without_an_id_is_set_aside_not_fatal(tmp_path):
    path = str(tmp_path / "j")
    with open(path, "wb") as f:
        f.write(journal.frame(ev(1)) + journal.frame({"seq": 2, "type": "start"}) + journal.frame(ev(3)))
    said: list[str] = []
    records, _ = journal.recover(path, journal.is_event, said.append)
    assert [x["seq"] for x in records] == [1, 3] and "without the fields it needs" in said[0]
    assert not journal.is_event({"seq": 1, "type": "x", "id": "../etc"})
    assert not journal.is_event({"seq": True, "type": "x", "id": "a"})


def test_journals_written_before_frames_are_still_read_also_mixed(tmp_path):
    path = str(tmp_path / "j")
    with open(path, "wb") as f:
        f.write(msgpack.packb(ev(1)) + msgpack.packb(ev(2)) + journal.frame(ev(3)))
    assert [x["seq"] for x in journal.load(path, journal.is_event)] == [1, 2, 3]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(1, 50), min_size=1, max_size=12), st.binary(max_size=64), st.integers(0, 10_000),
       st.integers(0, 255))
@example([10], b"", 0, 66)  # found by CI: a flipped byte made a bare map whose key is a list (msgpack: TypeError)
def test_fuzz_whatever_the_damage_the_reader_keeps_what_it_can_and_never_raises(seqs, junk, where, flip):
    frames = [journal.frame(ev(n)) for n in seqs]
    data = bytearray(b"".join(frames))
    at = where % (len(data) + 1)
    data[at:at] = junk  # garbage inserted anywhere
    damage = at if junk else len(data)
    if flip:
        pos = (at * 7) % len(data)
        data[pos] ^= flip  # and one byte flipped
        damage = min(damage, pos)
    r = journal.parse(bytes(data), journal.is_event)
    assert all(journal.is_event(x) for x in r.records)
    # every frame wholly before the damage is kept, in order, as the first records
    ends = [sum(map(len, frames[:i + 1])) for i in range(len(frames))]
    intact = [n for n, end in zip(seqs, ends, strict=True) if end <= damage]
    assert [x["seq"] for x in r.records][:len(intact)] == intact
    if not junk and not flip:
        assert [x["seq"] for x in r.records] == seqs and not r.bad


def test_a_manager_whose_events_journal_was_damaged_starts_and_loses_nothing(env):
    ids = [env.name("j1"), env.name("j2")]
    for id in ids:
        env.ok("run", "-d", "--name", id, "busybox", "sleep", "1000")
    c = Client(env.sock, timeout=10)
    top = c.call("events", {"since": 0, "timeout": 0})["seq"]  # type: ignore[index]
    c.close()
    env.kill_manager(signal.SIGKILL)
    path = os.path.join(env.state, "events.journal")
    data = open(path, "rb").read()
    cut = len(journal.frame(journal.load(path)[0]))  # after the first record: garbage, then one without an id
    with open(path, "wb") as f:
        f.write(data[:cut] + b"\xc1\x00\x00\x00\x10junk" + journal.frame({"seq": 9, "type": "x"}) + data[cut:])
    env.start_manager()
    log = env.manager_log()
    assert f"{path}: " in log and f"offset {cut}" in log and path + ".bad" in log, log
    listed = {c["id"]: c["status"] for c in env.ok("ps", "-a", "--format", "json").json()}
    assert listed == {ids[0]: "running", ids[1]: "running"}
    env.ok("stop", "-t", "0", ids[0])
    c = Client(env.sock, timeout=10)
    evs = wait_for(lambda: [e for e in c.call("events", {"since": 0, "timeout": 0})["events"]  # type: ignore[index]
                            if e["id"] == ids[0] and e["type"] == "exit"], 10, "the exit event")
    c.close()
    assert evs[0]["gseq"] > top  # numbers after the damage are new ones
    env.ok("rm", "-f", *ids)


def test_a_dead_shims_damaged_journal_is_read_for_what_it_holds(env):
    id = env.name("deadshim")
    env.ok("run", "-d", "--name", id, "busybox", "sleep", "1000")
    info = env.inspect(id)
    env.kill_manager(signal.SIGKILL)
    path = os.path.join(env.state, "shims", id, "events.journal")
    data = open(path, "rb").read()
    cut = len(journal.frame(journal.load(path)[0]))
    with open(path, "wb") as f:  # damage between its create and start records
        f.write(data[:cut] + b"\xc1garbage" + data[cut:])
    os.kill(info["shim_pid"], signal.SIGKILL)
    wait_for(lambda: not os.path.exists(f"/proc/{info['shim_pid']}"), 10, "the shim to die")
    env.start_manager()
    assert f"{path}: 8 bytes at offset {cut} skipped" in env.manager_log(), env.manager_log()
    after = env.inspect(id)
    assert after["status"] == "stopped" and after["exit_code"] is not None
    env.ok("rm", "-f", id)
