"""shimctl update [--memory SIZE] [--pids-limit N] [--restart POLICY] ID: change the resource limits of a running
container, or the restart policy of any container (its next exit is judged by the new one)."""

from __future__ import annotations

import argparse

from shimproto.policy import RestartPolicy

from .. import exitcodes, options
from ..cli import Cli

HELP = "change resource limits or the restart policy of a container"
ERRORS = exitcodes.OTHER


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--memory", type=options.parse_size, help="memory limit, e.g. 64m")
    p.add_argument("--pids-limit", type=options.parse_int, help="maximum number of processes")
    p.add_argument("--restart", metavar="POLICY", help="no, on-failure[:MAX], always or unless-stopped")
    p.add_argument("id", metavar="ID")


def run(cli: Cli, a: argparse.Namespace) -> int:
    if a.memory is None and a.pids_limit is None and a.restart is None:
        raise exitcodes.Usage("update needs --memory, --pids-limit or --restart")
    if a.restart is not None:
        RestartPolicy.parse(a.restart)  # refused here, before the manager is asked
    params = {"memory_limit": a.memory, "pids_limit": a.pids_limit, "restart": a.restart}
    cli.call("update", {"id": a.id, **{k: v for k, v in params.items() if v is not None}})
    print(a.id)
    return 0
