"""shimctl export [-o FILE] CONTAINER: the container's root filesystem as a tar archive (docker export), to FILE or
to standard output when that is not a terminal. FILE is written beside itself and renamed when whole: a failed
export leaves no file."""

from __future__ import annotations

import argparse
import os
import sys
from typing import BinaryIO

from shimproto.errors import InvalidArgument

from .. import exitcodes
from ..cli import Cli

HELP = "export a container's filesystem as a tar archive"
ERRORS = exitcodes.OTHER


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-o", "--output", default="", help="write to FILE instead of standard output")
    p.add_argument("id", metavar="CONTAINER")


def _copy(cli: Cli, stream: str, out: BinaryIO) -> None:
    while True:
        part: dict = cli.call("export_read", {"stream": stream, "wait": 10.0}, timeout=30.0)  # type: ignore
        out.write(part["data"])
        if part["eof"]:
            return


def run(cli: Cli, a: argparse.Namespace) -> int:
    if not a.output and sys.stdout.isatty():
        raise InvalidArgument("export: refusing to write a tar archive to a terminal (use -o FILE or redirect)")
    path = os.path.abspath(a.output) if a.output else ""
    if path and not os.path.isdir(os.path.dirname(path)):
        raise InvalidArgument(f"export: {os.path.dirname(path)}: no such directory")
    stream = cli.call("export", {"id": a.id})["stream"]  # type: ignore[index]
    if not path:
        _copy(cli, stream, sys.stdout.buffer)
        return 0
    tmp = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.shimctl-tmp")
    try:
        with open(tmp, "wb") as f:
            _copy(cli, stream, f)
        os.rename(tmp, path)
    except OSError as e:
        raise InvalidArgument(f"export: {e.filename or path}: {e.strerror}") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return 0
