"""shimctl stop [-t S] ID...: SIGTERM each container, SIGKILL it after the grace period; prints each id."""

from __future__ import annotations

import argparse

from .. import exitcodes
from ..cli import Cli, for_each

HELP = "SIGTERM, then SIGKILL after a grace period"
ERRORS = exitcodes.OTHER


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-t", "--time", type=float, default=None, help="seconds before SIGKILL (default: config, 10)")
    p.add_argument("ids", nargs="+", metavar="ID")


def run(cli: Cli, a: argparse.Namespace) -> int:
    return call_each(cli, a, "stop")


def call_each(cli: Cli, a: argparse.Namespace, method: str) -> int:
    """stop or restart each of a.ids with the grace period of -t; prints each id."""
    params = {} if a.time is None else {"timeout": a.time}
    return for_each(a.ids, lambda id: cli.call(method, {"id": id, **params}, timeout=3700))
