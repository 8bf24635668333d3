"""shimctl start [-a] [-i] ID: start a created container; a stopped one is started again (as restart does).

Prints the id; with -a follows its output instead and exits with its code, with -i sends it our stdin (the
container must have been made with -i).
"""

from __future__ import annotations

import argparse

from shimproto.model import STOPPED

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
    info = cli.call("inspect", {"id": a.id})
    attach = a.attach or a.interactive
    cursor = stream.pin(cli, a.id) if attach else 0  # its output from the start on is ours
    if info["status"] == STOPPED:  # type: ignore[index]
        cli.call("restart", {"id": a.id}, timeout=TIMEOUT)
    else:
        cli.call("start", {"id": a.id}, timeout=TIMEOUT)
    if not attach:
        print(a.id)
        return 0
    code = stream.attach(cli, a.id, "", cursor, stdin=a.interactive, tty=bool(info.get("terminal")))  # type: ignore
    return int(code)  # type: ignore[arg-type]  # no detach keys: never None
