"""Values that mean the same thing everywhere: container ids, statuses, signals and times (the exit status is
shimproto.exitstatus).

No dataclass here: every CLI verb imports this module, and `dataclasses` (with the `inspect` it imports) would be
a tenth of a short verb's run time.
"""

from __future__ import annotations

import re
import signal as _signal
import time

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


def rfc3339(ns: int) -> str:
    """Unix nanoseconds -> 2026-01-02T03:04:05.123456789Z (the CRI log and inspect format)."""
    secs, frac = divmod(ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + f".{frac:09d}Z"
