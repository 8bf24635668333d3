"""How the CRI front talks to the manager, and how the manager's errors become gRPC status codes.

Each gRPC worker thread has a shimproto Client of its own (a ZeroMQ socket is used by one thread only). The client
sends a call again when the manager went away mid-call, with the same request key, so a CRI call that was under way
while the manager was SIGKILLed completes once the next manager answers, and acts once."""

from __future__ import annotations

import functools
import logging
import os
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import grpc

from shimproto import errors
from shimproto.client import Client

log = logging.getLogger("shimd.cri")

CALL_TIMEOUT = 120.0  # seconds one manager call may take, restarts of the manager included

CODES = {
    errors.NotFound: grpc.StatusCode.NOT_FOUND,
    errors.AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    errors.InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    errors.InvalidState: grpc.StatusCode.FAILED_PRECONDITION,
    errors.Unavailable: grpc.StatusCode.UNAVAILABLE,
    errors.DeadlineExceeded: grpc.StatusCode.DEADLINE_EXCEEDED,
    errors.Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    errors.CommandNotFound: grpc.StatusCode.UNKNOWN,
    errors.CannotInvoke: grpc.StatusCode.UNKNOWN,
    errors.RuntimeFailed: grpc.StatusCode.UNKNOWN,
}


def status_code(e: errors.ShimdError) -> grpc.StatusCode:
    for cls in type(e).__mro__:
        if cls in CODES:
            return CODES[cls]
    return grpc.StatusCode.INTERNAL


class Manager:
    """The manager's API for the calling thread: `call(method, params)` returns the result or raises the
    shimproto error the manager answered with."""

    def __init__(self, socket_path: str) -> None:
        self.socket_path = socket_path
        self._local = threading.local()

    def client(self) -> Client:
        c = getattr(self._local, "client", None)
        if c is None:
            c = self._local.client = Client(self.socket_path, timeout=CALL_TIMEOUT)
        return c

    def release(self) -> None:
        """Close the calling thread's client (threads that end: a stream's pumps)."""
        c = getattr(self._local, "client", None)
        if c is not None:
            self._local.client = None
            c.close()

    def call(self, method: str, params: dict | None = None, timeout: float | None = None,
             idempotent: bool = False) -> Any:
        return self.client().call(method, params, timeout=timeout, idempotent=idempotent)

    def query(self, method: str, params: dict | None = None, timeout: float | None = None) -> Any:
        """A call that changes nothing (no request key needed)."""
        return self.call(method, params, timeout=timeout, idempotent=True)


F = TypeVar("F", bound=Callable[..., Any])


def rpc(fn: F) -> F:
    """A servicer method: shimproto errors become the matching gRPC status with their one-line message; anything
    else is logged with its traceback and answered INTERNAL."""
    @functools.wraps(fn)
    def wrapper(self: Any, request: Any, context: grpc.ServicerContext) -> Any:
        try:
            return fn(self, request, context)
        except errors.ShimdError as e:
            log.debug("%s: %s", fn.__name__, e)
            context.abort(status_code(e), str(e))
        except grpc.RpcError:
            raise
        except Exception as e:  # a bug here must not kill the worker thread
            if type(e) is Exception and not e.args:  # grpc's own abort() raises a bare Exception: let it through
                raise
            log.exception("%s failed", fn.__name__)
            context.abort(grpc.StatusCode.INTERNAL, f"{fn.__name__}: {type(e).__name__}: {e}")
    return wrapper  # type: ignore[return-value]


def new_id() -> str:
    """A CRI object id: 32 random hex digits (containerd uses 64; half leaves room in the 107 bytes of a shim's
    socket path, <state>/shims/<id>/shim.sock, for a longer state dir)."""
    return os.urandom(16).hex()
