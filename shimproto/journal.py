"""Append-only record files (msgpack maps, one write(2) per record), shared by the shim's event journal and the
manager's. A process crash can leave at most a torn last record, which readers skip; a reader never sees a record
that was not completely written before it."""

from __future__ import annotations

import os

import msgpack


def open_append(path: str) -> int:
    return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)


def append(fd: int, record: dict) -> None:
    os.write(fd, msgpack.packb(record, use_bin_type=True))


def load(path: str) -> list[dict]:
    """Every complete record of path ([] if it does not exist)."""
    out: list[dict] = []
    try:
        with open(path, "rb") as f:
            unpacker = msgpack.Unpacker(f, raw=False, strict_map_key=False)
            try:
                for rec in unpacker:
                    if isinstance(rec, dict):
                        out.append(rec)
            except (ValueError, msgpack.UnpackException):
                pass  # a torn tail record
    except FileNotFoundError:
        pass
    return out
