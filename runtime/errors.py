"""Runtime failures as typed exceptions, classified once from the runtime's own JSON log.

runc writes its final error as the last "level":"error" record of the file given with --log; the message texts it
uses for the common cases are stable across 1.0-1.1 and crun's are close. Call sites never match strings.
"""

from __future__ import annotations

import json
import re


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


class CommandNotFound(RuntimeError_):
    """The process's command does not exist in the container (docker's exit code 127)."""


class CannotInvoke(RuntimeError_):
    """The command exists but cannot be executed: a directory, no exec permission (docker's exit code 126)."""


# runc's words when execve of the container's (create) or an exec's (exec) command fails, as of 1.0-1.1:
#   ... unable to start container process: exec: "nocmd": executable file not found in $PATH
#   ... unable to start container process: exec: "/nope": stat /nope: no such file or directory
#   ... unable to start container process: exec: "/etc": permission denied
_EXEC_FAILED = re.compile(r'exec: "(?P<cmd>.*)": (?P<why>.*)$')
_EXEC_RULES: tuple[tuple[str, type[RuntimeError_]], ...] = (
    ("executable file not found", CommandNotFound),
    ("no such file or directory", CommandNotFound),
    ("not a directory", CommandNotFound),
    ("permission denied", CannotInvoke),
    ("is a directory", CannotInvoke),
    ("exec format error", CannotInvoke),
)

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
    m = _EXEC_FAILED.search(low)
    if m is not None:
        for needle, cls in _EXEC_RULES:
            if needle in m["why"]:
                return cls(command, message, exit_code)
    for needle, cls in _RULES:
        if needle in low:
            return cls(command, message, exit_code)
    return RuntimeError_(command, message, exit_code)
