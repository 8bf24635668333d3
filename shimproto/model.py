"""Values that mean the same thing everywhere: container ids, statuses and the exit status.

An exit status is modelled once, here: code (128 + signal for a signal death), the signal, the time and whether
the kernel OOM-killed the container.
"""

from __future__ import annotations

import os
import re
import signal as _signal
import time
from dataclasses import asdict, dataclass

from .errors import InvalidArgument

ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")

CREATED = "created"
RUNNING = "running"
PAUSED = "paused"
STOPPED = "stopped"
DELETED = "deleted"  # a shim's container after `runc delete`: the shim is on its way out
RESTARTING = "restarting"  # its last run exited and its restart policy runs it again after a back-off
STATUSES = (CREATED, RUNNING, PAUSED, STOPPED, RESTARTING)

# a health check's verdict on a run (shimd/health.py)
HEALTH_STARTING = "starting"
HEALTHY = "healthy"
UNHEALTHY = "unhealthy"


def check_id(value: object, what: str = "container id") -> str:
    """Return the id if it is valid, else raise InvalidArgument naming it."""
    if not isinstance(value, str) or not ID_RE.fullmatch(value):
        raise InvalidArgument(
            f"invalid {what} {value!r}: must match [A-Za-z0-9][A-Za-z0-9_.-]{{0,63}}"
        )
    return value


def parse_signal(value: object) -> int:
    """Accept 9, "9", "KILL", "SIGKILL", "sigkill"; raise InvalidArgument for anything else."""
    if isinstance(value, bool):
        raise InvalidArgument(f"unknown signal {value!r}")
    if isinstance(value, int):
        num = value
    elif isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
        num = int(value.strip())
    elif isinstance(value, str):
        name = value.strip().upper()
        if not name.startswith("SIG"):
            name = "SIG" + name
        try:
            num = int(getattr(_signal.Signals, name))
        except AttributeError:
            raise InvalidArgument(f"unknown signal {value!r}") from None
    else:
        raise InvalidArgument(f"unknown signal {value!r}")
    valid = {int(s) for s in _signal.valid_signals()}
    if num not in valid or num == 0:
        raise InvalidArgument(f"unknown signal {value!r}")
    return num


@dataclass(frozen=True)
class ExitStatus:
    code: int
    signal: int | None = None
    exited_at: int = 0  # unix time in nanoseconds
    oom_killed: bool = False
    reason: str = ""  # "" for a normal exit; e.g. "shim-lost" when no status could be recorded

    @classmethod
    def from_wait_status(cls, status: int, oom_killed: bool = False) -> ExitStatus:
        code = os.waitstatus_to_exitcode(status)
        if code < 0:
            return cls(code=128 - code, signal=-code, exited_at=time.time_ns(), oom_killed=oom_killed)
        return cls(code=code, exited_at=time.time_ns(), oom_killed=oom_killed)

    def to_wire(self) -> dict:
        return asdict(self)

    @classmethod
    def from_wire(cls, d: dict) -> ExitStatus:
        return cls(
            code=int(d["code"]),
            signal=d.get("signal"),
            exited_at=int(d.get("exited_at", 0)),
            oom_killed=bool(d.get("oom_killed", False)),
            reason=str(d.get("reason", "")),
        )


def rfc3339(ns: int) -> str:
    """Unix nanoseconds -> 2026-01-02T03:04:05.123456789Z (the CRI log and inspect format)."""
    secs, frac = divmod(ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + f".{frac:09d}Z"
