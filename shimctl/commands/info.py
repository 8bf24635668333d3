"""shimctl info [--format text|json]: the manager's root and state directories, its OCI runtime, the cgroup
version of the host and how many containers it holds, by state (stopped counts created ones too, as docker does)."""

from __future__ import annotations

import argparse

from .. import exitcodes, render
from ..cli import Cli

HELP = "the manager's directories, runtime and container counts"
ERRORS = exitcodes.OTHER


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--format", choices=["text", "json"], default="text")


def run(cli: Cli, a: argparse.Namespace) -> int:
    i = cli.call("info", {})
    if a.format == "json":
        print(render.to_json(i))
        return 0
    print(f"Containers: {i['containers']}\n Running: {i['running']}\n Paused: {i['paused']}\n"  # type: ignore
          f" Stopped: {i['stopped']}\nRuntime: {i['runtime']}\nCgroup Version: {i['cgroup_version']}\n"  # type: ignore
          f"Root Dir: {i['root']}\nState Dir: {i['state']}")  # type: ignore[index]
    return 0
