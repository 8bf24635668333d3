"""shimctl pull [--tls-verify=false] [--authfile FILE] [--platform OS/ARCH] REF: fetch an image from a registry
into the manager's store (skopeo does the fetching; layers already stored are not unpacked again). Prints the
image's digest and the reference."""

from __future__ import annotations

import argparse

from .. import exitcodes
from ..cli import Cli
from ._imageopts import TIMEOUT, add_registry_flags, authfile

HELP = "pull an image from a registry"
ERRORS = exitcodes.OTHER


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_registry_flags(p)
    p.add_argument("--platform", default="", help="OS/ARCH[/VARIANT] of a multi-platform image (default: "
                   "linux/this machine's)")
    p.add_argument("-q", "--quiet", action="store_true", help="print the reference only")
    p.add_argument("ref", metavar="REF")


def run(cli: Cli, a: argparse.Namespace) -> int:
    view = cli.call("pull", {"ref": a.ref, "tls_verify": a.tls_verify, "authfile": authfile(a.authfile),
                             "platform": a.platform}, timeout=TIMEOUT)
    if not a.quiet:
        print(f"Digest: {view['digest']}")  # type: ignore[index]
    print(a.ref)
    return 0
