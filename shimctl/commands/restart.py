"""shimctl restart [-t S] ID...: stop each container (SIGTERM, SIGKILL after the grace period) and start it again;
a stopped or created one is just started. Prints each id."""

from __future__ import annotations

import argparse

from .. import exitcodes
from ..cli import Cli
from .stop import add_arguments, call_each

HELP = "stop and start containers again"
ERRORS = exitcodes.OTHER


__all__ = ["HELP", "ERRORS", "add_arguments", "run"]


def run(cli: Cli, a: argparse.Namespace) -> int:
    return call_each(cli, a, "restart")
