"""Runtime failures as typed exceptions, classified once from the runtime's own JSON log.

runc writes its final error as the last "level":"error" record of the file given with --log; the message texts it
uses for the common cases are stable across 1.0-1.1 and crun's are close. Call sites never match strings.
"""

from __future__ import annotations

import json


class RuntimeError_(Exception):
    """The runtime failed. .message is the runtime's own words; .command what we ran."""

    def __init__(self, command: str, message: str, exit_code: int) -> None:
        super().__init__(f"{command}: {message}")
        self.command = command
        self.message = message
        self.exit_code = exit_code


class NotFound(RuntimeError_):
    """The runtime has no container of that id."""


class AlreadyExists(RuntimeError_):
    """A container of that id already exists in the runtime's state."""


class NotRunning(RuntimeError_):
    """The operation needs a running (or created) container."""


_RULES: tuple[tuple[str, type[RuntimeError_]], ...] = (
    ("does not exist", NotFound),
    ("not exist", NotFound),
    ("already exists", AlreadyExists),
    ("exists", AlreadyExists),
    ("not running", NotRunning),
    ("container not running", NotRunning),
    ("is stopped", NotRunning),
    ("process already finished", NotRunning),
)


def last_error(log_text: str) -> str:
    """The last error-level message of a runtime JSON log (plain lines are kept as they are)."""
    last = ""
    for line in log_text.splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            rec = json.loads(line)
        except ValueError:
            last = line
            continue
        if isinstance(rec, dict) and rec.get("level") in ("error", "fatal", "panic"):
            last = str(rec.get("msg", line))
    return last


def classify(command: str, log_text: str, exit_code: int) -> RuntimeError_:
    message = last_error(log_text) or f"exited with status {exit_code} and logged no error"
    low = message.lower()
    for needle, cls in _RULES:
        if needle in low:
            return cls(command, message, exit_code)
    return RuntimeError_(command, message, exit_code)
