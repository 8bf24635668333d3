"""Typed errors and their wire codes: the one table both ends of every hop use.

A handler raises one of these; the server turns it into {"code", "message"}; the client turns that back into the
same class. Anything else a handler raises becomes INTERNAL (the traceback is logged where it happened, not sent).
"""

from __future__ import annotations


class ShimdError(Exception):
    """Base of every error that crosses the wire."""

    code = "internal"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def to_wire(self) -> dict:
        return {"code": self.code, "message": self.message}


class NotFound(ShimdError):
    code = "not_found"


class AlreadyExists(ShimdError):
    code = "already_exists"


class InvalidArgument(ShimdError):
    code = "invalid_argument"


class InvalidState(ShimdError):
    """The operation is not allowed in the current state ("cannot start a stopped container")."""

    code = "invalid_state"


class Unavailable(ShimdError):
    """The peer (manager or shim) did not answer or is gone."""

    code = "unavailable"


class ManagerNotRunning(Unavailable):
    """Client side only: nothing serves the socket and no manager is starting (never sent on the wire)."""


class DeadlineExceeded(ShimdError):
    code = "deadline_exceeded"


class RuntimeFailed(ShimdError):
    """The OCI runtime (runc) refused or failed; the message carries the runtime's own error."""

    code = "runtime_failed"


class CommandNotFound(ShimdError):
    """The container's (or exec's) command does not exist: docker's exit code 127."""

    code = "command_not_found"


class CannotInvoke(ShimdError):
    """The command exists but cannot be run (not executable, a directory): docker's exit code 126."""

    code = "cannot_invoke"


class Unauthenticated(ShimdError):
    """A registry wants credentials we do not have, or refused the ones given."""

    code = "unauthenticated"


class Internal(ShimdError):
    code = "internal"


_BY_CODE: dict[str, type[ShimdError]] = {
    cls.code: cls
    for cls in (NotFound, AlreadyExists, InvalidArgument, InvalidState, Unavailable, DeadlineExceeded,
                RuntimeFailed, CommandNotFound, CannotInvoke, Unauthenticated, Internal)
}


def from_wire(err: object) -> ShimdError:
    """Rebuild the typed exception from an error reply; a malformed one is itself an internal error."""
    if not isinstance(err, dict):
        return Internal(f"malformed error reply: {err!r}")
    cls = _BY_CODE.get(str(err.get("code")), Internal)
    return cls(str(err.get("message", "")))
