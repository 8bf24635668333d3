"""A SPDY/3.1 server connection: one reader thread, the streams the client opens, a lock around every write.

This is the server half of what moby/spdystream gives kubelet: the client opens every stream (odd ids, each
answered with a SYN_REPLY at once), either side half-closes with FIN, RST_STREAM tears one stream down, PINGs
from the client are echoed, GOAWAY stops new streams. The caller takes streams with `Connection.accept` and
reads, writes and closes each from its own threads.

Flow control, as spdystream does it: spdystream never sends WINDOW_UPDATE and ignores the ones it gets, so
honouring its 64 KiB send window would stall every stream after 64 KiB; we do not limit what we send. What we
receive is bounded per stream instead (`RECV_LIMIT`): the reader thread waits while a stream's unread bytes
exceed it, which is spdystream's own behaviour (its frame workers block on an unbuffered channel), and we give
the window back with WINDOW_UPDATE as bytes are read, so a stricter SPDY/3.1 peer works too.

A stream's states and the moves between them are the table `TRANSITIONS`; `next_state` refuses anything else.
"""

from __future__ import annotations

import logging
import queue
import socket
import threading
from typing import BinaryIO

from shimproto.errors import InvalidState, ShimdError

from . import spdy

log = logging.getLogger(__name__)

OPEN, CLOSED, RESET = "open", "closed", "reset"
LOCAL_CLOSED, REMOTE_CLOSED = "half-closed (local)", "half-closed (remote)"

# (state, event) -> next state. local_fin: we sent FIN; remote_fin: the peer did; reset: RST either way, or the
# connection went. Anything not listed is illegal.
TRANSITIONS: dict[tuple[str, str], str] = {
    (OPEN, "local_fin"): LOCAL_CLOSED,
    (OPEN, "remote_fin"): REMOTE_CLOSED,
    (LOCAL_CLOSED, "remote_fin"): CLOSED,
    (REMOTE_CLOSED, "local_fin"): CLOSED,
    (OPEN, "reset"): RESET,
    (LOCAL_CLOSED, "reset"): RESET,
    (REMOTE_CLOSED, "reset"): RESET,
    (CLOSED, "reset"): RESET,  # the connection going away after both sides finished
}

RECV_LIMIT = 1 << 20
DATA_CHUNK = 32 * 1024
MAX_STREAMS = 256


class StreamClosed(InvalidState):
    """A write on a stream that we closed, that was reset, or whose connection is gone."""


def next_state(state: str, event: str, stream_id: int) -> str:
    try:
        return TRANSITIONS[(state, event)]
    except KeyError:
        raise StreamClosed(f"cannot {event.replace('_', ' ')} stream {stream_id}: it is {state}") from None


class Stream:
    """One stream the client opened. `read` gives b"" once the client finished (or reset, or went away)."""

    def __init__(self, conn: Connection, stream_id: int, headers: spdy.Headers) -> None:
        self.conn = conn
        self.id = stream_id
        self.headers = headers
        self.state = OPEN
        self._buf = bytearray()
        self._unacked = 0  # bytes read but not yet given back with WINDOW_UPDATE
        self._cond = threading.Condition()
        self.remote_done = threading.Event()  # FIN or RST from the client, or the connection went

    def header(self, name: str, default: str = "") -> str:
        values = self.headers.get(name.lower())
        return values[0] if values else default

    def _move(self, event: str) -> None:  # caller holds _cond
        self.state = next_state(self.state, event, self.id)
        if self.state in (REMOTE_CLOSED, CLOSED, RESET):
            self.remote_done.set()
        if self.state in (CLOSED, RESET):
            self.conn._forget(self)
        self._cond.notify_all()

    # -- called by the caller ------------------------------------------------------------------------------
    def read(self, n: int = 65536) -> bytes:
        """Up to n bytes; blocks until some arrive; b"" at the end of the client's side."""
        with self._cond:
            while not self._buf and not self.remote_done.is_set():
                self._cond.wait()
            data = bytes(self._buf[:n])
            del self._buf[:n]
            self._unacked += len(data)
            give_back = 0
            if self._unacked >= spdy.DEFAULT_WINDOW // 2 and self.state in (OPEN, LOCAL_CLOSED):
                give_back, self._unacked = self._unacked, 0
            self._cond.notify_all()
        if give_back:
            self.conn.send_quietly(spdy.WindowUpdate(self.id, give_back))
        return data

    def write(self, data: bytes) -> None:
        """Send all of data (in frames of DATA_CHUNK); StreamClosed if this side can no longer send."""
        view = memoryview(data)
        for off in range(0, len(view), DATA_CHUNK):
            with self._cond:
                if self.state not in (OPEN, REMOTE_CLOSED):
                    raise StreamClosed(f"write on stream {self.id}: it is {self.state}")
            self.conn.send(spdy.Data(self.id, bytes(view[off : off + DATA_CHUNK])))

    def close(self) -> None:
        """Half-close our side (DATA with FIN). Idempotent; quiet when the stream or connection is gone."""
        with self._cond:
            if self.state not in (OPEN, REMOTE_CLOSED):
                return
            self._move("local_fin")
        self.conn.send_quietly(spdy.Data(self.id, b"", spdy.FLAG_FIN))

    def reset(self, status: int = spdy.CANCEL) -> None:
        """Tear the stream down both ways (RST_STREAM). Idempotent."""
        with self._cond:
            if self.state == RESET:
                return
            self._move("reset")
        self.conn.send_quietly(spdy.RstStream(self.id, status))

    # -- called by the reader thread -----------------------------------------------------------------------
    def _on_data(self, data: bytes, fin: bool) -> bool:
        """False when the stream cannot take data (the client had already finished it)."""
        with self._cond:
            if self.state not in (OPEN, LOCAL_CLOSED):
                return self.state == RESET  # data racing our RST is dropped quietly
            self._buf += data
            if fin:
                self._move("remote_fin")
            self._cond.notify_all()
            while len(self._buf) > RECV_LIMIT and self.state in (OPEN, LOCAL_CLOSED, REMOTE_CLOSED):
                self._cond.wait(1.0)
                if self.conn.closing.is_set():
                    break
        return True

    def _on_remote_end(self) -> None:
        with self._cond:
            if self.state != RESET:
                self._move("reset")


class Connection:
    """The server end of one upgraded HTTP connection. Call `start`, then `accept` streams; `close` when done."""

    def __init__(self, sock: socket.socket, rfile: BinaryIO | None = None, name: str = "spdy") -> None:
        self.sock = sock
        self.name = name
        self._codec = spdy.HeaderCodec()
        self._reader = spdy.FrameReader(rfile if rfile is not None else sock.makefile("rb"), self._codec)
        self._wlock = threading.Lock()
        self._streams: dict[int, Stream] = {}
        self._slock = threading.Lock()
        self._last_id = 0
        self._new: queue.Queue[Stream | None] = queue.Queue()
        self.closed = threading.Event()  # the reader stopped: EOF, error, or close()
        self.closing = threading.Event()  # close() was called (wakes a reader waiting for a stream's reader)
        self.goaway_received = False
        self.peer_settings: dict[int, int] = {}
        self._thread = threading.Thread(target=self._run, name=f"{name}-reader", daemon=True)

    def start(self) -> None:
        self._thread.start()

    # -- sending ---------------------------------------------------------------------------------------------
    def send(self, frame: spdy.Frame) -> None:
        """Encode and write one frame; StreamClosed when the connection is gone."""
        with self._wlock:
            if self.closed.is_set() and not isinstance(frame, spdy.GoAway):
                raise StreamClosed(f"{self.name}: connection closed")
            try:
                self.sock.sendall(spdy.encode_frame(frame, self._codec))
            except OSError as e:
                self._shutdown()
                raise StreamClosed(f"{self.name}: send {type(frame).__name__}: {e}") from None

    def send_quietly(self, frame: spdy.Frame) -> None:
        try:
            self.send(frame)
        except StreamClosed:
            pass

    # -- the caller's side -----------------------------------------------------------------------------------
    def accept(self, timeout: float | None = None) -> Stream | None:
        """The next stream the client opened (already replied to); None on timeout or once the connection ends."""
        try:
            s = self._new.get(timeout=timeout)
        except queue.Empty:
            return None
        if s is None:
            self._new.put(None)  # keep telling every later caller
        return s

    def goaway(self, status: int = spdy.GOAWAY_OK) -> None:
        self.send_quietly(spdy.GoAway(self._last_id, status))

    def close(self) -> None:
        """Drop the connection: every stream ends, the reader thread stops. Idempotent."""
        self.closing.set()
        self._shutdown()
        if threading.current_thread() is not self._thread and self._thread.is_alive():
            self._thread.join(5)
        try:
            self.sock.close()
        except OSError:
            pass

    def wait_closed(self, timeout: float | None = None) -> bool:
        """Wait for the client to hang up (the reader sees EOF)."""
        return self.closed.wait(timeout)

    def _shutdown(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    # -- the reader thread -----------------------------------------------------------------------------------
    def _run(self) -> None:
        try:
            while True:
                self._dispatch(self._reader.read_frame())
        except spdy.ConnectionClosed:
            pass
        except spdy.ProtocolError as e:
            log.warning("%s: %s", self.name, e)
            self.send_quietly(spdy.GoAway(self._last_id, spdy.GOAWAY_PROTOCOL_ERROR))
        except (OSError, ValueError) as e:  # ValueError: the file was closed under us
            log.debug("%s: read: %s", self.name, e)
        except ShimdError as e:
            log.warning("%s: %s", self.name, e)
        finally:
            self.closed.set()
            self._new.put(None)
            with self._slock:
                streams = list(self._streams.values())
            for s in streams:
                s._on_remote_end()

    def _dispatch(self, f: spdy.Frame) -> None:
        if isinstance(f, spdy.SynStream):
            self._on_syn(f)
        elif isinstance(f, spdy.Data):
            s = self._stream(f.stream_id)
            if s is None or not s._on_data(f.data, bool(f.flags & spdy.FLAG_FIN)):
                status = spdy.INVALID_STREAM if s is None else spdy.STREAM_ALREADY_CLOSED
                self.send_quietly(spdy.RstStream(f.stream_id, status))
        elif isinstance(f, spdy.HeadersFrame):
            s = self._stream(f.stream_id)
            if s is not None and f.flags & spdy.FLAG_FIN:
                s._on_data(b"", True)
        elif isinstance(f, spdy.RstStream):
            s = self._stream(f.stream_id)
            if s is not None:
                s._on_remote_end()
        elif isinstance(f, spdy.Ping):
            if f.ping_id % 2 == 1:  # the client's ping: echo it; an even id would be a reply to ours (we send none)
                self.send_quietly(f)
        elif isinstance(f, spdy.Settings):
            self.peer_settings.update(f.values)
        elif isinstance(f, spdy.GoAway):
            self.goaway_received = True
        elif isinstance(f, spdy.SynReply):  # we open no streams, so there is nothing to reply to
            self.send_quietly(spdy.RstStream(f.stream_id, spdy.PROTOCOL_ERROR))
        # WINDOW_UPDATE: see the module docstring; we do not limit what we send.

    def _on_syn(self, f: spdy.SynStream) -> None:
        if f.stream_id % 2 == 0 or f.stream_id <= self._last_id:
            raise spdy.ProtocolError(f"stream id {f.stream_id} after {self._last_id} is not a new client stream")
        self._last_id = f.stream_id
        with self._slock:
            busy = len(self._streams) >= MAX_STREAMS
        if self.goaway_received or busy:
            self.send_quietly(spdy.RstStream(f.stream_id, spdy.REFUSED_STREAM))
            return
        s = Stream(self, f.stream_id, f.headers)
        with self._slock:
            self._streams[s.id] = s
        self.send_quietly(spdy.SynReply(s.id, {}))
        if f.flags & spdy.FLAG_FIN:
            s._on_data(b"", True)
        self._new.put(s)

    def _stream(self, sid: int) -> Stream | None:
        with self._slock:
            return self._streams.get(sid)

    def _forget(self, s: Stream) -> None:
        with self._slock:
            self._streams.pop(s.id, None)
