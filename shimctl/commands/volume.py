"""shimctl volume create NAME | ls | inspect NAME... | rm NAME...: named volumes.

`run -v NAME:/path` makes the volume on first use and copies the image's content at /path into it while it is
still empty; the data stays when the container is removed. rm is refused while a container uses the volume.
"""

from __future__ import annotations

import argparse

from .. import exitcodes, render
from ..cli import Cli
from .network import each, listing

HELP = "manage named volumes"
ERRORS = exitcodes.OTHER


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="op", required=True, metavar="create|ls|inspect|rm")
    sub.add_parser("create", help="make a volume").add_argument("name", metavar="NAME")
    sub.add_parser("ls", help="list volumes").add_argument("-q", "--quiet", action="store_true")
    sub.add_parser("inspect", help="show volumes as JSON").add_argument("names", nargs="+", metavar="NAME")
    sub.add_parser("rm", help="remove volumes no container uses").add_argument("names", nargs="+", metavar="NAME")


def run(cli: Cli, a: argparse.Namespace) -> int:
    if a.op == "create":
        print(cli.call("volume_create", {"name": a.name})["name"])  # type: ignore[index]
        return 0
    if a.op == "ls":
        return listing(cli, "volume_list", a.quiet, ["VOLUME NAME", "CONTAINERS", "CREATED", "MOUNTPOINT"],
                       lambda v, now: [v["name"], len(v["containers"]), render.ago(v["created_at"], now),
                                       v["mountpoint"]])
    return each(cli, "volume_inspect" if a.op == "inspect" else "volume_remove", a.names, a.op == "inspect")
