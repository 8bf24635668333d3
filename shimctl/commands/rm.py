"""shimctl rm [-f] ID...: remove containers (their shim, log and writable layer); a running one needs -f, which
kills it first. Prints each id."""

from __future__ import annotations

import argparse

from .. import exitcodes
from ..cli import Cli, for_each

HELP = "remove containers"
ERRORS = exitcodes.OTHER


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-f", "--force", action="store_true", help="kill a running container first")
    p.add_argument("ids", nargs="+", metavar="ID")


def run(cli: Cli, a: argparse.Namespace) -> int:
    return for_each(a.ids, lambda id: cli.call("delete", {"id": id, "force": a.force}, timeout=60))
