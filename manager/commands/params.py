"""Parameters more than one command reads."""

from __future__ import annotations

from shimproto.errors import InvalidArgument
from shimproto.model import ID_RE
from shimproto.wire import Params


def request_key(p: Params) -> str:
    """The client's key of a call that changes something ("" when it sent none); see the package docstring."""
    key = p.str("key", "")
    if key and not ID_RE.fullmatch(key):
        raise InvalidArgument(f"{p.method}: invalid request key {key[:80]!r}: must match {ID_RE.pattern}")
    return key


def stop_grace(p: Params, default: float, container: int | None = None) -> float:
    """The call's timeout, else the container's --stop-timeout, else the configured default."""
    g = p.float("timeout", default if container is None else float(container))
    if not 0 <= g <= 3600:
        raise InvalidArgument(f"{p.method}: stop timeout {g:g} must be between 0 and 3600 seconds")
    return g
