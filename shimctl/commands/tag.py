"""shimctl tag SOURCE TARGET: name the image SOURCE (tag, digest or id) TARGET too."""

from __future__ import annotations

import argparse

from .. import exitcodes
from ..cli import Cli

HELP = "tag an image"
ERRORS = exitcodes.OTHER


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", metavar="SOURCE")
    p.add_argument("target", metavar="TARGET")


def run(cli: Cli, a: argparse.Namespace) -> int:
    cli.call("image_tag", {"source": a.source, "target": a.target})
    return 0
