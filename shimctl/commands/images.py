"""shimctl images [--digests] [-q] [--format json]: the stored images (the built-in busybox is not one)."""

from __future__ import annotations

import argparse

from .. import exitcodes, render
from ..cli import Cli
from ._imageopts import images_table, short_id

HELP = "list images"
ERRORS = exitcodes.OTHER


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--digests", action="store_true", help="show digests")
    p.add_argument("-q", "--quiet", action="store_true", help="only image ids")
    p.add_argument("--format", choices=["table", "json"], default="table")


def run(cli: Cli, a: argparse.Namespace) -> int:
    views: list[dict] = cli.call("images")  # type: ignore[assignment]
    if a.format == "json":
        print(render.to_json(views))
    elif a.quiet:
        for v in views:
            print(short_id(v["id"]))
    else:
        print(images_table(views, a.digests), end="")
    return 0
