"""shimctl start [-a] [-i] ID: start a created container; a stopped one runs again (same writable layer and log).

Prints the id; with -a follows its output instead and exits with its code, with -i sends it our stdin (the
container must have been made with -i).
"""

from __future__ import annotations

import argparse

from .. import exitcodes, stream
from ..cli import Cli

HELP = "start a created or stopped container"
ERRORS = exitcodes.LAUNCH
TIMEOUT = 60.0


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-a", "--attach", action="store_true", help="follow its output and exit with its code")
    p.add_argument("-i", "--interactive", action="store_true", help="send our stdin to it")
    p.add_argument("id", metavar="ID")


def run(cli: Cli, a: argparse.Namespace) -> int:
    """The manager's start runs a stopped container again; attached, its output from the start on is ours."""
    attach = a.attach or a.interactive
    if not attach:
        cli.call("start", {"id": a.id}, timeout=TIMEOUT)
        print(a.id)
        return 0
    tty = bool(cli.call("inspect", {"id": a.id})["terminal"])  # type: ignore[index]
    cursor = stream.pin(cli, a.id)
    cli.call("start", {"id": a.id}, timeout=TIMEOUT)
    code = stream.attach(cli, a.id, "", cursor, stdin=a.interactive, tty=tty)
    return int(code)  # type: ignore[arg-type]  # no detach keys: never None
