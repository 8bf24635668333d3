"""shimctl rmi [-f] IMAGE...: remove images (as `image rm`). One of several tags is only untagged; an image a
container uses is refused unless -f, which untags it."""

from __future__ import annotations

import argparse
import sys

from shimproto.errors import ShimdError

from .. import exitcodes
from ..cli import Cli

HELP = "remove images"
ERRORS = exitcodes.OTHER


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-f", "--force", action="store_true", help="untag an image even while a container uses it")
    p.add_argument("refs", nargs="+", metavar="IMAGE")


def run(cli: Cli, a: argparse.Namespace) -> int:
    rc = 0
    for ref in a.refs:
        try:
            res: dict = cli.call("image_remove", {"ref": ref, "force": a.force})  # type: ignore[assignment]
        except ShimdError as e:
            print(f"shimctl: {e.message}", file=sys.stderr)
            rc = 1
            continue
        for t in res["untagged"]:
            print(f"Untagged: {t}")
        for d in res["deleted"]:
            print(f"Deleted: {d}")
    return rc
