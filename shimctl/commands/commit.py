"""shimctl commit [-m MESSAGE] [-a AUTHOR] [-p=false] CONTAINER [REF]: a new image from the container's changes
(its writable layer as one layer on top of its image; the image's config kept). A running container is paused
meanwhile unless --pause=false. Prints the new image's id."""

from __future__ import annotations

import argparse

from .. import exitcodes
from ..cli import Cli
from ._imageopts import TIMEOUT, bool_flag

HELP = "create a new image from a container's changes"
ERRORS = exitcodes.OTHER


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-m", "--message", default="", help="commit message (the history entry's comment)")
    p.add_argument("-a", "--author", default="", help="author (e.g. 'Name <mail>')")
    p.add_argument("-p", "--pause", type=bool_flag, nargs="?", const=True, default=True, metavar="BOOL",
                   help="pause a running container while its changes are read (default true)")
    p.add_argument("id", metavar="CONTAINER")
    p.add_argument("ref", metavar="REF", nargs="?", default="")


def run(cli: Cli, a: argparse.Namespace) -> int:
    view: dict = cli.call("commit", {"id": a.id, "ref": a.ref, "comment": a.message, "author": a.author,  # type: ignore
                                     "pause": a.pause}, timeout=TIMEOUT)
    print(view["id"])
    return 0
