"""The streaming server's backend: exec and attach streams go to the container's shim through the manager's API
(exec with kept output, logs long-polls, write_stdin, close_stdin, resize), so a stream outlives a manager restart
(each call is sent again to the next manager); port-forward connects a socket inside the pod's network namespace.

Each stream runs on the connection's own thread, plus one thread for stdin and one for resizes; every thread that
ends closes its manager client (Manager.release)."""

from __future__ import annotations

import ctypes
import logging
import os
import socket
import threading

from shimproto.errors import DeadlineExceeded, InvalidState, NotFound, Unavailable
from shimproto.model import RUNNING

from .calls import Manager
from .execsync import POLL, end, pump_output, wait_exit
from .meta import SANDBOX, CriMeta
from .streamapi import AttachRequest, ExecRequest, StreamIO

log = logging.getLogger("shimd.cri")
CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)
# a stdin write failed so: the client's input is lost unless it learns of it (a closed stdin, an exited container:
# the output goes on, as docker's attach does)
LOST_IN_TRANSIT = (Unavailable, DeadlineExceeded)


class StreamBackend:
    def __init__(self, manager: Manager) -> None:
        self.m = manager

    def _thread(self, fn, *args, failed: list[Exception] | None = None) -> threading.Thread:
        def run() -> None:
            try:
                fn(*args)
            except Exception as e:  # the stream's end or the container's: the main pump reports it
                log.debug("stream helper %s ended: %s", fn.__name__, e)
                if failed is not None and isinstance(e, LOST_IN_TRANSIT):
                    failed.append(e)
            finally:
                self.m.release()
        t = threading.Thread(target=run, daemon=True, name="cri-" + fn.__name__)
        t.start()
        return t

    def _stdin(self, io: StreamIO, target: dict, close: bool) -> None:
        assert io.stdin is not None
        while True:
            data = io.stdin.read(65536)
            if not data:
                if close:
                    self.m.call("close_stdin", target)
                return
            self.m.call("write_stdin", {**target, "data": data})

    def _resizes(self, io: StreamIO, target: dict, done: threading.Event) -> None:
        while not done.is_set() and not io.gone.is_set():
            size = io.next_resize(0.5)
            if size is not None:
                self.m.call("resize", {**target, "rows": size.height, "cols": size.width})

    def _write(self, io: StreamIO, stream: str, data: bytes) -> None:
        w = io.stderr if stream == "stderr" and not io.tty else io.stdout
        if w is not None:
            w.write(data)

    def exec(self, req: ExecRequest, io: StreamIO) -> int:
        try:
            x = self.m.call("exec", {"id": req.container_id, "args": req.cmd, "tty": req.tty,
                                     "stdin": req.stdin})
            eid = x["exec_id"]
            target = {"id": req.container_id, "exec_id": eid}
            done = threading.Event()
            failed: list[Exception] = []  # stdin the manager never took: the exec is ended, the client told
            if req.stdin and io.stdin is not None:
                self._thread(self._stdin, io, target, True, failed=failed)
            if req.tty:
                self._thread(self._resizes, io, target, done)
            try:
                pump_output(self.m, req.container_id, eid, None, lambda s, d: self._write(io, s, d),
                            check=lambda: _raise_first(failed))
                code = wait_exit(self.m, req.container_id, eid)
            except Exception:
                done.set()
                end(self.m, req.container_id, eid, kill=True)
                raise
            done.set()
            end(self.m, req.container_id, eid, kill=False)
            return code
        finally:
            self.m.release()

    def attach(self, req: AttachRequest, io: StreamIO) -> None:
        try:
            view = self.m.query("inspect", {"id": req.container_id})
            meta = CriMeta.of(view)
            target = {"id": req.container_id}
            done = threading.Event()
            # "now" in the output, pinned before any stdin goes in: what the container answers to our stdin comes
            # after it (asked in the follow call itself, a reply to stdin sent meanwhile could land before "now")
            cursor = self.m.query("logs", {**target, "cursor": -1})["cursor"]
            failed: list[Exception] = []  # stdin the manager never took ends the stream with that error
            if req.stdin and io.stdin is not None:
                self._thread(self._stdin, io, target, bool(meta and meta.extra.get("stdin_once")), failed=failed)
            if req.tty:
                self._thread(self._resizes, io, target, done)
            try:
                while not io.gone.is_set() and not failed:
                    page = self.m.query("logs", {"id": req.container_id, "cursor": cursor, "follow": True,
                                                 "timeout": POLL}, timeout=POLL + 30)
                    for rec in page["records"]:
                        self._write(io, rec[0], rec[1])
                    cursor = page["cursor"]
                    if page["eof"]:
                        return
                if not io.gone.is_set():
                    _raise_first(failed)
            finally:
                done.set()
        finally:
            self.m.release()

    def port_forward(self, pod_sandbox_id: str, port: int) -> socket.socket:
        try:
            view = self.m.query("inspect", {"id": pod_sandbox_id})
        except NotFound:
            raise NotFound(f"pod sandbox {pod_sandbox_id} not found") from None
        finally:
            self.m.release()
        meta = CriMeta.of(view)
        if meta is None or meta.kind != SANDBOX:
            raise NotFound(f"pod sandbox {pod_sandbox_id} not found")
        if view.get("status") != RUNNING or not view.get("pid"):
            raise InvalidState(f"pod sandbox {pod_sandbox_id} is not running")
        if view.get("network") == "host":
            return socket.create_connection(("127.0.0.1", port), timeout=10)
        return connect_in_netns(int(view["pid"]), port)


def _raise_first(failed: list[Exception]) -> None:
    if failed:
        raise failed[0]


def connect_in_netns(pid: int, port: int) -> socket.socket:
    """A TCP connection to localhost:port inside the network namespace of pid, made by a thread of its own that
    enters the namespace (setns affects only the calling thread; a socket keeps the namespace it was made in)."""
    result: dict = {}

    def run() -> None:
        try:
            target = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        except OSError as e:
            result["error"] = e
            return
        try:
            if _libc.setns(target, CLONE_NEWNET) != 0:
                err = ctypes.get_errno()
                raise OSError(err, f"setns into the pod's network namespace: {os.strerror(err)}")
            result["sock"] = socket.create_connection(("127.0.0.1", port), timeout=10)
        except OSError as e:
            result["error"] = e
        finally:
            os.close(target)
        # the thread ends here: its namespace goes with it, the process's other threads never left theirs

    t = threading.Thread(target=run, name="cri-portforward")
    t.start()
    t.join()
    if "error" in result:
        raise result["error"]
    s: socket.socket = result["sock"]
    s.settimeout(None)
    return s
