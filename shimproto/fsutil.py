"""Crash-safe file writes shared by the manager and the shim: a reader sees the old file or the new one, never half."""

from __future__ import annotations

import json
import os


def atomic_write(path: str, data: bytes, mode: int = 0o600, durable: bool = True) -> None:
    """Write data to path via a temp file and a rename: any process crash leaves the old file or the new one.
    durable also fsyncs the file and then the directory, so a power loss does too; a file that is written again
    before it is next used (or lives on a tmpfs) need not pay for that."""
    tmp = f"{path}.tmp.{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        if durable:
            os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(tmp, path)
    if not durable:
        return
    dfd = os.open(os.path.dirname(path) or ".", os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def write_json(path: str, obj: object) -> None:
    atomic_write(path, json.dumps(obj, indent=1, sort_keys=True).encode())


def read_json(path: str) -> object:
    with open(path) as f:
        return json.load(f)
