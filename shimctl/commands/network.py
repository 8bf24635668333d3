"""shimctl network create [--subnet CIDR] NAME | ls | inspect NAME... | rm NAME...: bridge networks.

Containers join one with `run --network NAME`; containers on one network reach each other by address and by
name (their ids and host names are in each other's /etc/hosts). The default network `bridge` is made on first use.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable

from shimproto.errors import ShimdError

from .. import exitcodes, render
from ..cli import Cli

HELP = "manage networks"
ERRORS = exitcodes.OTHER


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="op", required=True, metavar="create|ls|inspect|rm")
    c = sub.add_parser("create", help="make a network")
    c.add_argument("--subnet", default="", help="IPv4 CIDR (default: the next free 10.89.N.0/24)")
    c.add_argument("name", metavar="NAME")
    sub.add_parser("ls", help="list networks").add_argument("-q", "--quiet", action="store_true")
    sub.add_parser("inspect", help="show networks as JSON").add_argument("names", nargs="+", metavar="NAME")
    sub.add_parser("rm", help="remove networks no container uses").add_argument("names", nargs="+",
                                                                               metavar="NAME")


def each(cli: Cli, method: str, names: list[str], show: bool) -> int:
    """Call method for every name (docker goes on after a failure and exits 1 at the end)."""
    out, rc = [], 0
    for name in names:
        try:
            res = cli.call(method, {"name": name})
            out.append(res) if show else print(name)  # type: ignore[func-returns-value]
        except ShimdError as e:
            print(f"shimctl: {e.message}", file=sys.stderr)
            rc = 1
    if show:
        print(render.to_json(out))
    return rc


def listing(cli: Cli, method: str, quiet: bool, headers: list[str], row: Callable[[dict, float], list]) -> int:
    """`ls`: a table of what method lists, or its names only."""
    items = cli.call(method)
    if quiet:
        print("\n".join(x["name"] for x in items), end="\n" if items else "")  # type: ignore[union-attr]
    else:
        now = time.time()
        print(render.table(headers, [row(x, now) for x in items]), end="")  # type: ignore[union-attr]
    return 0


def run(cli: Cli, a: argparse.Namespace) -> int:
    if a.op == "create":
        print(cli.call("network_create", {"name": a.name, "subnet": a.subnet})["name"])  # type: ignore[index]
        return 0
    if a.op == "ls":
        return listing(cli, "network_list", a.quiet, ["NAME", "SUBNET", "GATEWAY", "BRIDGE", "CONTAINERS", "CREATED"],
                       lambda n, now: [n["name"], n["subnet"], n["gateway"], n["bridge"], len(n["containers"]),
                                       render.ago(n["created_at"], now)])
    return each(cli, "network_inspect" if a.op == "inspect" else "network_remove", a.names, a.op == "inspect")
