"""shimctl top ID: the processes of a container (host pids)."""

from __future__ import annotations

import argparse

from .. import exitcodes, render
from ..cli import Cli

HELP = "the processes of a container"
ERRORS = exitcodes.OTHER


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("id", metavar="ID")


def run(cli: Cli, a: argparse.Namespace) -> int:
    rows = cli.call("top", {"id": a.id})
    print(render.table(["PID", "PPID", "CMD"], [[r["pid"], r["ppid"], r["cmd"]] for r in rows]), end="")  # type: ignore
    return 0
