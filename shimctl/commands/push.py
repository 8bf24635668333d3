"""shimctl push [--tls-verify=false] [--authfile FILE] REF [DEST]: send a stored image to its registry (or to
DEST, another reference)."""

from __future__ import annotations

import argparse

from .. import exitcodes
from ..cli import Cli
from ._imageopts import TIMEOUT, add_registry_flags, authfile

HELP = "push an image to a registry"
ERRORS = exitcodes.OTHER


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_registry_flags(p)
    p.add_argument("ref", metavar="REF")
    p.add_argument("dest", nargs="?", default="", metavar="DEST")


def run(cli: Cli, a: argparse.Namespace) -> int:
    cli.call("push", {"ref": a.ref, "dest": a.dest, "tls_verify": a.tls_verify, "authfile": authfile(a.authfile)},
             timeout=TIMEOUT)
    print(a.dest or a.ref)
    return 0
