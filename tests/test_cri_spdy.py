"""Units of the CRI streaming server: SPDY/3.1 framing, the stream state table, tokens, protocol negotiation, and a
connection driven by a small Python client (for what the Go client never does: old protocols, pings, bad ids)."""

from __future__ import annotations

import io
import json
import socket
import struct
import threading
import zlib

import pytest

from manager.cri import remotecommand, spdy
from manager.cri.spdyconn import TRANSITIONS, Connection, StreamClosed, next_state
from manager.cri.streaming import (
    AttachRequest,
    ExecRequest,
    InvalidRequest,
    NoCommonProtocol,
    PortForwardRequest,
    TokenCache,
    TokenExpired,
    TokenUnknown,
    TooManyRequests,
    UpgradeRequired,
    negotiate,
)

ALL_FRAMES = [
    spdy.SynStream(1, {"streamtype": ["error"], "x": ["a", "b"]}, spdy.FLAG_FIN, 0, 3),
    spdy.SynReply(1, {}), spdy.HeadersFrame(3, {"k": ["v"]}, spdy.FLAG_FIN), spdy.RstStream(5, spdy.CANCEL),
    spdy.Settings({spdy.SETTINGS_INITIAL_WINDOW_SIZE: 1 << 20}), spdy.Ping(7), spdy.GoAway(9, spdy.GOAWAY_OK),
    spdy.WindowUpdate(1, 4096), spdy.Data(1, b"payload", spdy.FLAG_FIN), spdy.Data(3, b""),
]


def test_the_dictionary_is_spdy3s():
    # The SPDY/3 draft's dictionary: 1423 bytes, zlib dictionary id (adler32) 0xe3c6a7c2.
    assert len(spdy.DICTIONARY) == 1423
    assert zlib.adler32(spdy.DICTIONARY) == 0xE3C6A7C2
    block = spdy.HeaderCodec().encode({"streamtype": ["error"]})
    assert block[0] & 0x0F == 8 and block[1] & 0x20  # deflate, FDICT set ...
    assert struct.unpack(">I", block[2:6])[0] == 0xE3C6A7C2  # ... naming this dictionary


def test_every_frame_survives_a_round_trip():
    out, inn = spdy.HeaderCodec(), spdy.HeaderCodec()
    wire = b"".join(spdy.encode_frame(f, out) for f in ALL_FRAMES)
    reader = spdy.FrameReader(io.BytesIO(wire), inn)
    assert [reader.read_frame() for _ in ALL_FRAMES] == ALL_FRAMES
    with pytest.raises(spdy.ConnectionClosed):
        reader.read_frame()


def test_header_blocks_share_one_compression_context_per_direction():
    out = spdy.HeaderCodec()
    headers = {"streamtype": ["stdout"], "port": ["8080"], "requestid": ["0"]}
    first, second = out.encode(headers), out.encode(headers)
    assert len(second) < len(first)  # the second refers back into the first
    inn = spdy.HeaderCodec()
    assert inn.decode(first) == headers and inn.decode(second) == headers
    with pytest.raises(spdy.ProtocolError):
        spdy.HeaderCodec().decode(second)  # not a stream of its own


def test_unknown_control_frames_are_skipped_and_other_versions_refused():
    codec = spdy.HeaderCodec()
    unknown = struct.pack(">HHI", 0x8003, 0x00F0, 2) + b"xx"
    reader = spdy.FrameReader(io.BytesIO(unknown + spdy.encode_frame(spdy.Ping(1), codec)), codec)
    assert reader.read_frame() == spdy.Ping(1)
    v2 = struct.pack(">HHI", 0x8002, spdy.PING, 4) + b"\0\0\0\1"
    with pytest.raises(spdy.ProtocolError):
        spdy.FrameReader(io.BytesIO(v2), codec).read_frame()


def test_every_listed_stream_move_lands_on_a_known_state_and_every_other_move_is_refused():
    states = {s for s, _ in TRANSITIONS} | set(TRANSITIONS.values())
    events = {e for _, e in TRANSITIONS}
    for state in states:
        for event in events:
            if (state, event) in TRANSITIONS:
                assert next_state(state, event, 1) in states
            else:
                with pytest.raises(StreamClosed):
                    next_state(state, event, 1)


def test_a_token_works_once_for_its_own_kind_until_it_expires():
    now = [100.0]
    cache = TokenCache(ttl=60, limit=2, clock=lambda: now[0])
    req = ExecRequest("c1", ["true"])
    tok = cache.insert(req)
    with pytest.raises(TokenUnknown):
        cache.consume("attach", tok)  # and that used it up
    tok = cache.insert(req)
    assert cache.consume("exec", tok) is req
    with pytest.raises(TokenUnknown):
        cache.consume("exec", tok)
    tok = cache.insert(req)
    now[0] += 60
    with pytest.raises(TokenExpired):
        cache.consume("exec", tok)
    cache.insert(req), cache.insert(req)
    with pytest.raises(TooManyRequests):
        cache.insert(req)
    now[0] += 61  # expired ones make room
    cache.insert(req)


def test_requests_are_checked_as_kubelet_checks_them():
    for bad in (ExecRequest("c1", ["sh"], tty=True, stderr=True), ExecRequest("c1", ["sh"], False, False, False, False),
                ExecRequest("c1", []), ExecRequest("", ["sh"]), AttachRequest("c1", tty=True),
                PortForwardRequest(""), PortForwardRequest("p", [0])):
        with pytest.raises(InvalidRequest):
            bad.validate()


def test_negotiation_picks_our_best_common_protocol():
    assert negotiate(["channel.k8s.io, v4.channel.k8s.io", "v2.channel.k8s.io"], remotecommand.PROTOCOLS) == \
        remotecommand.V4
    assert negotiate(["v2.channel.k8s.io,channel.k8s.io"], remotecommand.PROTOCOLS) == remotecommand.V2
    with pytest.raises(NoCommonProtocol):
        negotiate(["v5.channel.k8s.io"], remotecommand.PROTOCOLS)
    with pytest.raises(UpgradeRequired):
        negotiate([" "], remotecommand.PROTOCOLS)


class PyClient:
    """The client end of a socketpair: frames out with its own header context, frames in with another."""

    def __init__(self) -> None:
        self.sock, server_sock = socket.socketpair()
        self.conn = Connection(server_sock, name="test")
        self.out, self.reader = spdy.HeaderCodec(), spdy.FrameReader(self.sock.makefile("rb"), spdy.HeaderCodec())
        self.conn.start()

    def send(self, frame: spdy.Frame) -> None:
        self.sock.sendall(spdy.encode_frame(frame, self.out))

    def until(self, kind: type) -> spdy.Frame:
        while not isinstance(f := self.reader.read_frame(), kind):
            pass
        return f

    def close(self) -> None:
        self.sock.close()
        self.conn.close()


def test_a_connection_replies_to_streams_echoes_pings_and_carries_data_both_ways():
    c = PyClient()
    c.send(spdy.SynStream(1, {"streamtype": ["stdin"]}))
    assert c.until(spdy.SynReply).stream_id == 1
    s = c.conn.accept(timeout=5)
    assert s is not None and s.header("streamtype") == "stdin"
    c.send(spdy.Ping(5))
    assert c.until(spdy.Ping) == spdy.Ping(5)
    c.send(spdy.Data(1, b"hello", spdy.FLAG_FIN))
    assert s.read() == b"hello" and s.read() == b""
    s.write(b"back")
    s.close()
    assert c.until(spdy.Data) == spdy.Data(1, b"back")
    assert c.until(spdy.Data) == spdy.Data(1, b"", spdy.FLAG_FIN)
    with pytest.raises(StreamClosed):
        s.write(b"more")
    c.send(spdy.SynStream(2, {}))  # an even id is the server's: the connection is over
    assert c.until(spdy.GoAway).status == spdy.GOAWAY_PROTOCOL_ERROR
    assert c.conn.wait_closed(5)
    c.close()


class OneShot:
    def __init__(self, code: int) -> None:
        self.code = code

    def exec(self, req, io):  # type: ignore[no-untyped-def]
        io.stdout.write(b"out")
        return self.code


@pytest.mark.parametrize("protocol,code,expected", [
    (remotecommand.V4, 0, {"metadata": {}, "status": "Success"}),
    (remotecommand.V4, 3, {"status": "Failure", "reason": "NonZeroExitCode",
                           "details": {"causes": [{"reason": "ExitCode", "message": "3"}]}}),
    (remotecommand.V2, 3, b"command terminated with non-zero exit code: exit status 3"),
    (remotecommand.V1, 0, b""),
])
def test_the_exit_status_on_the_error_stream_follows_the_protocol(protocol, code, expected):
    c = PyClient()
    done = threading.Thread(target=remotecommand.serve, daemon=True, args=(
        c.conn, protocol, ExecRequest("c1", ["x"], stderr=False), OneShot(code), 5))
    done.start()
    c.send(spdy.SynStream(1, {"streamtype": ["error"]}))
    c.send(spdy.SynStream(3, {"streamtype": ["stdout"]}))
    got: dict[int, bytes] = {1: b"", 3: b""}
    finished: set[int] = set()
    while finished != {1, 3}:
        f = c.until(spdy.Data)
        got[f.stream_id] += f.data
        if f.flags & spdy.FLAG_FIN:
            finished.add(f.stream_id)
    assert got[3] == b"out"
    if isinstance(expected, dict):
        status = json.loads(got[1])
        assert {k: status[k] for k in expected} == expected
    else:
        assert got[1] == expected
    c.close()
    done.join(5)
    assert not done.is_alive()
