"""Framing: one ZeroMQ frame per message, msgpack-encoded, with a hard size limit.

Request: {"id": int, "method": str, "params": map}. Reply: {"id": int, "result": any} or
{"id": int, "error": {"code": str, "message": str}}. Streams (logs, events, wait) are cursors: the caller asks
again with the cursor it was given, so every exchange is one request and one reply and no peer can be flooded.
"""

from __future__ import annotations

import math

import msgpack

from .errors import InvalidArgument

MAX_MESSAGE = 8 * 1024 * 1024  # also set as ZMQ_MAXMSGSIZE on every server socket
MAX_CONTAINERS = 100_000  # maps and arrays in one request: 3 MB of empty maps decoded to ~200 MB without a bound


def encode(obj: object) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def encode_request(rid: int, method: str, params: dict | None) -> bytes:
    """A request frame; InvalidArgument when it passes the limit (the peer's socket would drop the connection)."""
    data = encode({"id": rid, "method": method, "params": params or {}})
    if len(data) > MAX_MESSAGE:
        raise InvalidArgument(f"{method}: request of {len(data)} bytes exceeds the limit of {MAX_MESSAGE}")
    return data


def decode(frame: bytes) -> object:
    if len(frame) > MAX_MESSAGE:
        raise InvalidArgument(f"message of {len(frame)} bytes exceeds the limit of {MAX_MESSAGE}")
    try:
        return msgpack.unpackb(frame, raw=False, strict_map_key=True)
    except Exception as e:  # msgpack raises a zoo of types for bad input
        raise InvalidArgument(f"malformed message: {type(e).__name__}: {e}") from None


def _decode_bounded(frame: bytes) -> object:
    """decode() of a request, refused as soon as it holds more than MAX_CONTAINERS maps and arrays (each is tens
    of bytes in memory for one byte on the wire)."""
    if len(frame) > MAX_MESSAGE:
        raise InvalidArgument(f"message of {len(frame)} bytes exceeds the limit of {MAX_MESSAGE}")
    count = 0

    def counted(x: object) -> object:
        nonlocal count
        count += 1
        if count > MAX_CONTAINERS:
            raise InvalidArgument(f"request holds more than {MAX_CONTAINERS} maps and arrays")
        return x

    try:
        return msgpack.unpackb(frame, raw=False, strict_map_key=True, list_hook=counted,
                               object_pairs_hook=lambda pairs: counted(dict(pairs)))
    except InvalidArgument:
        raise
    except Exception as e:  # msgpack raises a zoo of types for bad input
        raise InvalidArgument(f"malformed message: {type(e).__name__}: {e}") from None


def decode_request(frame: bytes) -> tuple[object, str, dict]:
    """Return (request id, method, params) or raise InvalidArgument (the id is kept when readable)."""
    msg = _decode_bounded(frame)
    if not isinstance(msg, dict):
        raise InvalidArgument("malformed request: not a map")
    rid = msg.get("id")
    if rid is not None and (not isinstance(rid, int) or isinstance(rid, bool) or not -2**63 <= rid < 2**64):
        raise InvalidArgument("malformed request: 'id' must be an integer")
    method = msg.get("method")
    params = msg.get("params", {})
    if not isinstance(method, str):
        raise BadRequest(rid, InvalidArgument("malformed request: 'method' must be a string"))
    if not isinstance(params, dict):
        raise BadRequest(rid, InvalidArgument("malformed request: 'params' must be a map"))
    return rid, method, params


class BadRequest(Exception):
    """A request whose id could be read but whose body could not."""

    def __init__(self, rid: object, error: InvalidArgument) -> None:
        super().__init__(error.message)
        self.rid = rid
        self.error = error


class Params:
    """Typed access to a request's params; every miss is an InvalidArgument that names the field."""

    def __init__(self, method: str, raw: dict) -> None:
        self.method = method
        self.raw = raw

    def _get(self, name: str, types: type | tuple[type, ...], default: object, required: bool) -> object:
        if name not in self.raw or self.raw[name] is None:
            if required:
                raise InvalidArgument(f"{self.method}: missing parameter {name!r}")
            return default
        value = self.raw[name]
        if isinstance(value, bool) and bool not in (types if isinstance(types, tuple) else (types,)):
            raise InvalidArgument(f"{self.method}: parameter {name!r} has the wrong type")
        if not isinstance(value, types):
            raise InvalidArgument(f"{self.method}: parameter {name!r} has the wrong type")
        return value

    def str(self, name: str, default: str | None = None, required: bool = False) -> str:
        return self._get(name, str, default, required)  # type: ignore[return-value]

    def int(self, name: str, default: int | None = None, required: bool = False) -> int:
        return self._get(name, int, default, required)  # type: ignore[return-value]

    def float(self, name: str, default: float | None = None, required: bool = False) -> float:
        v = self._get(name, (int, float), default, required)
        if v is None:
            return v  # type: ignore[return-value]
        try:
            f = float(v)  # type: ignore[arg-type]
        except OverflowError:
            f = math.inf
        if not math.isfinite(f):
            raise InvalidArgument(f"{self.method}: parameter {name!r} must be a finite number")
        return f

    def bytes(self, name: str, required: bool = False) -> bytes:
        return self._get(name, bytes, b"", required)  # type: ignore[return-value]

    def bool(self, name: str, default: bool = False) -> bool:
        return self._get(name, bool, default, False)  # type: ignore[return-value]

    def strlist(self, name: str, default: list | None = None, required: bool = False) -> list[str]:
        v = self._get(name, list, default if default is not None else [], required)
        if not all(isinstance(x, str) for x in v):  # type: ignore[union-attr]
            raise InvalidArgument(f"{self.method}: parameter {name!r} must be a list of strings")
        return list(v)  # type: ignore[arg-type]

    def map(self, name: str, default: dict | None = None, required: bool = False) -> dict:
        return self._get(name, dict, default if default is not None else {}, required)  # type: ignore
