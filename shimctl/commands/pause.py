"""shimctl pause ID...: freeze every process of containers; prints each id."""

from __future__ import annotations

import argparse

from .. import exitcodes
from ..cli import Cli, for_each

HELP = "freeze every process of containers"
ERRORS = exitcodes.OTHER


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("ids", nargs="+", metavar="ID")


def run(cli: Cli, a: argparse.Namespace) -> int:
    return for_each(a.ids, lambda id: cli.call("pause", {"id": id}))
