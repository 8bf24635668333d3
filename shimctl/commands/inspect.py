"""shimctl inspect ID...: the containers as a JSON array (the manager's inspect view, full timestamps)."""

from __future__ import annotations

import argparse
import sys

from shimproto.errors import ShimdError

from .. import exitcodes, render
from ..cli import Cli

HELP = "show containers as JSON"
ERRORS = exitcodes.OTHER


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("ids", nargs="+", metavar="ID")


def run(cli: Cli, a: argparse.Namespace) -> int:
    out, rc = [], 0
    for id in a.ids:
        try:
            out.append(cli.call("inspect", {"id": id}))
        except ShimdError as e:
            print(f"shimctl: {e.message}", file=sys.stderr)
            rc = 1
    print(render.to_json(out))
    return rc
