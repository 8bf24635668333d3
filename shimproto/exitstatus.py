"""The exit status, modelled once: code (128 + signal for a signal death), the signal, the time and whether the
kernel OOM-killed the container."""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass


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
