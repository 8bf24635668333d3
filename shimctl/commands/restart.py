"""shimctl restart [-t S] ID...: stop each container (SIGTERM, SIGKILL after the grace period) and start it again;
a stopped or created one is just started. Prints each id."""

from __future__ import annotations

import argparse

from .. import exitcodes
from ..cli import Cli, for_each

HELP = "stop and start containers again"
ERRORS = exitcodes.OTHER


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-t", "--time", type=float, default=None, help="seconds before SIGKILL (default: config, 10)")
    p.add_argument("ids", nargs="+", metavar="ID")


def run(cli: Cli, a: argparse.Namespace) -> int:
    params = {} if a.time is None else {"timeout": a.time}
    return for_each(a.ids, lambda id: cli.call("restart", {"id": id, **params}, timeout=3700))
