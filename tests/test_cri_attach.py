"""The CRI front's attach and exec streams (manager/cri/streambackend.py) in the orders a manager restart can put
their calls in.

A scripted manager stands in for the real one (the real path runs in tests/test_cri_front.py and in critest): its
container is a shell that answers each stdin line at once, and it answers a "from now on" logs call late, the way a
manager that has just restarted may take a waiting stdin write first. critest's attach spec failed once under
manager kills with exactly this symptom: the answer to its stdin never reached stdout."""

from __future__ import annotations

import io
import threading

import pytest

from manager.cri.meta import CONTAINER, CriMeta
from manager.cri.streamapi import AttachRequest, ExecRequest, StreamIO
from manager.cri.streambackend import StreamBackend
from shimproto.errors import ManagerNotRunning

pytestmark = [pytest.mark.timeout(30)]
PIN_DELAY = 0.3  # seconds the scripted manager holds a "from now on" logs call unless a stdin write comes first


class ScriptedManager:
    """The manager's API as StreamBackend uses it, for one container whose shell echoes `got:<line>` for each
    stdin line and says `bye` when its stdin closes (stdin_once), then exits."""

    def __init__(self, lose_stdin: bool = False) -> None:
        self.records: list[list] = []
        self.exited = False
        self.lose_stdin = lose_stdin
        self.killed = self.deleted = False
        self.cond = threading.Condition()

    def query(self, method: str, params: dict, timeout: float | None = None) -> object:
        return self.call(method, params, timeout)

    def call(self, method: str, params: dict, timeout: float | None = None, idempotent: bool = False) -> object:
        with self.cond:
            if method == "inspect":
                meta = CriMeta(kind=CONTAINER, name="c", extra={"stdin_once": True})
                return {"id": params["id"], "labels": meta.labels_for_shimd()}
            if method == "write_stdin":
                if self.lose_stdin:
                    raise ManagerNotRunning("cannot connect to the shimd manager: is shimd-manager running?")
                for line in params["data"].decode().splitlines():
                    self.records.append(["stdout", f"got:{line}\n".encode()])
            elif method == "close_stdin":
                self.records.append(["stdout", b"bye\n"])
                self.exited = True
            elif method == "logs":
                return self._logs(params)
            elif method == "exec":
                return {"exec_id": "e1"}
            elif method == "kill":
                self.killed = self.exited = True
            elif method == "wait":
                return {"exited": self.exited, "exit_code": 137 if self.killed else 0}
            elif method == "delete":
                self.deleted = True
            else:
                raise AssertionError(f"unexpected call {method}")
            self.cond.notify_all()
            return None

    def _logs(self, p: dict) -> dict:
        if p["cursor"] == -1:  # "now": answered once a stdin write came in, or after PIN_DELAY
            self.cond.wait_for(lambda: self.records, PIN_DELAY)
            return {"records": [], "cursor": len(self.records), "eof": False}
        if p.get("follow"):
            self.cond.wait_for(lambda: len(self.records) > p["cursor"] or self.exited, p.get("timeout", 5))
        page = self.records[p["cursor"]:]
        return {"records": page, "cursor": p["cursor"] + len(page), "eof": self.exited and not page}

    def release(self) -> None:
        pass


class Output:
    def __init__(self) -> None:
        self.data = b""

    def write(self, data: bytes) -> int:
        self.data += data
        return len(data)


def attach(m: ScriptedManager, stdin: bytes, exec: bool = False) -> tuple[Output, threading.Event,
                                                                         BaseException | None]:
    out, gone = Output(), threading.Event()
    sio = StreamIO(False, io.BytesIO(stdin), out, Output(), gone)  # type: ignore[arg-type]
    error: BaseException | None = None
    try:
        if exec:
            StreamBackend(m).exec(ExecRequest("c", ["cat"], stdin=True), sio)  # type: ignore[arg-type]
        else:
            StreamBackend(m).attach(AttachRequest("c", stdin=True), sio)  # type: ignore[arg-type]
    except BaseException as e:
        error = e
    return out, gone, error


def test_the_answer_to_stdin_reaches_stdout_though_the_manager_takes_the_write_before_the_follow_call():
    out, _, error = attach(ScriptedManager(), b"echo hello\n")
    assert error is None
    assert out.data == b"got:echo hello\nbye\n"


@pytest.mark.parametrize("exec", [False, True], ids=["attach", "exec"])
def test_stdin_the_manager_never_took_ends_the_stream_with_that_error_instead_of_hanging(exec):
    m = ScriptedManager(lose_stdin=True)
    done: dict = {}
    t = threading.Thread(target=lambda: done.setdefault("r", attach(m, b"echo hello\n", exec)), daemon=True)
    t.start()
    t.join(15)
    assert not t.is_alive(), "the stream went on though its stdin was lost"
    out, _, error = done["r"]
    assert isinstance(error, ManagerNotRunning), error
    assert out.data == b""
    if exec:  # its process is not left waiting for input that will never come
        assert m.killed and m.deleted
