"""shimctl kill [-s SIGNAL] ID...: send a signal (default KILL; a name like TERM or SIGUSR1, or a number) to each
container; prints each id."""

from __future__ import annotations

import argparse

from .. import exitcodes
from ..cli import Cli, for_each

HELP = "send a signal to containers"
ERRORS = exitcodes.OTHER


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-s", "--signal", default="KILL")
    p.add_argument("ids", nargs="+", metavar="ID")


def run(cli: Cli, a: argparse.Namespace) -> int:
    return for_each(a.ids, lambda id: cli.call("kill", {"id": id, "signal": a.signal}))
