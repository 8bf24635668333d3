"""shimctl attach [--no-stdin] [--detach-keys KEYS] ID: follow a running container's output from now on and send
it our stdin; exits with its code when it exits.

Typing the detach keys (default ctrl-p,ctrl-q; docker's syntax: ctrl-<letter> or single characters, comma
separated) stops following and exits 0; the container keeps running and its stdin stays open.
"""

from __future__ import annotations

import argparse

from shimproto.errors import InvalidState
from shimproto.model import RUNNING

from .. import exitcodes, options, stream
from ..cli import Cli

HELP = "follow a running container's output and send it our stdin"
ERRORS = exitcodes.OTHER


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-stdin", action="store_true", help="do not send our stdin")
    p.add_argument("--detach-keys", type=options.parse_detach_keys, default=options.DEFAULT_DETACH_KEYS,
                   metavar="KEYS", help="keys that detach, e.g. ctrl-x,x (default %(default)s)")
    p.add_argument("id", metavar="ID")


def run(cli: Cli, a: argparse.Namespace) -> int:
    info = cli.call("inspect", {"id": a.id})
    if info["status"] != RUNNING:  # type: ignore[index]
        raise InvalidState(f"cannot attach to a {info['status']} container")  # type: ignore[index]
    cursor = stream.pin(cli, a.id)  # before our input can make it print anything
    code = stream.attach(cli, a.id, "", cursor, stdin=not a.no_stdin, tty=bool(info.get("terminal")),  # type: ignore
                         detach_keys=a.detach_keys, run=int(info.get("run") or 0))  # type: ignore[union-attr]
    return 0 if code is None else code
