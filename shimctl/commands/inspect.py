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
    return inspect_each(cli, "inspect", "id", a.ids)


def inspect_each(cli: Cli, method: str, param: str, names: list[str]) -> int:
    """One JSON array of method's view of each name; a line on stderr (and exit 1) for each one that failed."""
    out, rc = [], 0
    for name in names:
        try:
            out.append(cli.call(method, {param: name}))
        except ShimdError as e:
            print(f"shimctl: {e.message}", file=sys.stderr)
            rc = 1
    print(render.to_json(out))
    return rc
