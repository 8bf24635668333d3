"""shimctl version [--format text|json]: the versions of this client, of the manager, of its API and of the OCI
runtime it drives. The client's part is printed even when the manager cannot be reached (then the command exits 1).
"""

from __future__ import annotations

import argparse

from .. import exitcodes, render
from ..cli import Cli

HELP = "client, manager and runtime versions"
ERRORS = exitcodes.OTHER


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--format", choices=["text", "json"], default="text")


def client_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("shimd")
    except PackageNotFoundError:
        return "unknown"


def run(cli: Cli, a: argparse.Namespace) -> int:
    client = {"version": client_version()}
    if a.format == "json":
        print(render.to_json({"client": client, "manager": cli.call("version", {})}))
        return 0
    print(f"Client:\n Version:          {client['version']}", flush=True)
    m = cli.call("version", {})
    print(f"Manager:\n Version:          {m['version']}\n API version:      {m['api_version']}\n"  # type: ignore
          f" Runtime:          {m['runtime']} {m['runtime_version']}")  # type: ignore[index]
    return 0
