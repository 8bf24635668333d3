"""shimctl wait ID...: wait for each container to exit and print its exit code (128 + signal for a signal
death); across manager restarts."""

from __future__ import annotations

import argparse
import sys

from shimproto.errors import ShimdError

from .. import exitcodes, stream
from ..cli import Cli

HELP = "wait for containers to exit and print their exit codes"
ERRORS = exitcodes.OTHER


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("ids", nargs="+", metavar="ID")


def run(cli: Cli, a: argparse.Namespace) -> int:
    rc = 0
    for id in a.ids:
        try:
            print(stream.wait_exit(cli, id), flush=True)
        except ShimdError as e:
            print(f"shimctl: {e.message}", file=sys.stderr)
            rc = 1
    return rc
