"""shimctl update [--memory SIZE] [--pids-limit N] ID: change the resource limits of a running container."""

from __future__ import annotations

import argparse

from .. import exitcodes, options
from ..cli import Cli

HELP = "change resource limits of a running container"
ERRORS = exitcodes.OTHER


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--memory", type=options.parse_size, help="memory limit, e.g. 64m")
    p.add_argument("--pids-limit", type=int, help="maximum number of processes")
    p.add_argument("id", metavar="ID")


def run(cli: Cli, a: argparse.Namespace) -> int:
    if a.memory is None and a.pids_limit is None:
        raise exitcodes.Usage("update needs --memory or --pids-limit")
    cli.call("update", {"id": a.id, "memory_limit": a.memory, "pids_limit": a.pids_limit})
    print(a.id)
    return 0
