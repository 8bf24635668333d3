"""shimctl image COMMAND: ls, inspect REF..., rm [-f] REF..., prune [-a], import FILE|DIR [--tag REF],
save REF -o FILE [--format docker|oci], pull, push and tag (as the verbs of the same names)."""

from __future__ import annotations

import argparse
import os

from .. import exitcodes
from ..cli import Cli
from . import images, inspect, pull, push, rmi, tag
from ._imageopts import TIMEOUT

HELP = "manage images"
ERRORS = exitcodes.OTHER
SAME = {"ls": images, "pull": pull, "push": push, "tag": tag, "rm": rmi}


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="image_cmd", required=True, metavar="COMMAND")
    for name, mod in SAME.items():
        mod.add_arguments(sub.add_parser(name, help=mod.HELP))
    sub.add_parser("inspect", help="show images as JSON").add_argument("refs", nargs="+", metavar="REF")
    pr = sub.add_parser("prune", help="remove untagged images no container uses")
    pr.add_argument("-a", "--all", action="store_true", help="every image no container uses")
    im = sub.add_parser("import", help="import a docker or OCI archive, or an OCI layout directory")
    im.add_argument("path", metavar="FILE|DIR")
    im.add_argument("--tag", default="", help="name the image REF (default: the names the archive carries)")
    im.add_argument("--platform", default="", help="OS/ARCH of a multi-platform layout")
    im.add_argument("--ref", default="", help="the image to take from an archive or layout holding several")
    sv = sub.add_parser("save", help="write an image to an archive")
    sv.add_argument("ref", metavar="REF")
    sv.add_argument("-o", "--output", required=True, help="the archive to write")
    sv.add_argument("--format", choices=["docker", "oci"], default="docker")


def run(cli: Cli, a: argparse.Namespace) -> int:
    if a.image_cmd in SAME:
        return SAME[a.image_cmd].run(cli, a)
    if a.image_cmd == "inspect":
        return inspect.inspect_each(cli, "image_inspect", "ref", a.refs)
    if a.image_cmd == "prune":
        res: dict = cli.call("image_prune", {"all": a.all}, timeout=TIMEOUT)  # type: ignore[assignment]
        for d in res["deleted"]:
            print(f"Deleted: {d}")
        print(f"Removed {res['blobs']} blobs and {res['layers']} layer directories")
        return 0
    if a.image_cmd == "import":
        view: dict = cli.call("image_import", {"path": os.path.abspath(a.path), "tag": a.tag,  # type: ignore
                                               "platform": a.platform, "ref": a.ref}, timeout=TIMEOUT)
        print(view["tags"][0] if view["tags"] else view["id"])
        return 0
    cli.call("image_save", {"ref": a.ref, "path": os.path.abspath(a.output), "format": a.format}, timeout=TIMEOUT)
    return 0
