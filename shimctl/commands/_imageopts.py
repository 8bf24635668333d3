"""Flags the image verbs share (pull, push, image import/save): registry TLS, auth file, platform, and the
views' rendering."""

from __future__ import annotations

import argparse
import os

from ..render import human_size, table

TIMEOUT = 3600.0  # a pull or push of a big image over a slow link


def bool_flag(text: str) -> bool:
    """--flag=BOOL (docker's boolean flags: true, false, 1, 0)."""
    low = text.lower()
    if low not in ("true", "false", "1", "0"):
        raise argparse.ArgumentTypeError(f"invalid boolean value {text!r} (true or false)")
    return low in ("true", "1")


def add_registry_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tls-verify", type=bool_flag, nargs="?", const=True, default=True, metavar="BOOL",
                   help="require HTTPS and valid certificates (--tls-verify=false for a plain-HTTP registry)")
    p.add_argument("--authfile", default="", help="docker-style auth file (default: $XDG_RUNTIME_DIR/containers/"
                   "auth.json, else ~/.docker/config.json, when one exists)")


def authfile(given: str) -> str:
    """The auth file to send: the one given (made absolute), else the first default that exists, else ""."""
    if given:
        return os.path.abspath(given)
    for path in (os.path.join(os.environ.get("XDG_RUNTIME_DIR", ""), "containers", "auth.json"),
                 os.path.expanduser("~/.docker/config.json")):
        if os.path.isabs(path) and os.path.isfile(path):
            return path
    return ""


def short_id(digest: str) -> str:
    return digest.removeprefix("sha256:")[:12]


def images_table(views: list[dict], digests: bool) -> str:
    """docker images: REPOSITORY TAG [DIGEST] IMAGE ID CREATED SIZE, one row per tag (<none> when untagged)."""
    rows = []
    for v in views:
        names = [t.rpartition(":") for t in v["tags"]] or [("<none>", "", "<none>")]
        for repo, _, tag in names:
            row = [repo, tag] + ([v["digest"]] if digests else []) + [short_id(v["id"]), v["created"][:19] or "-",
                                                                       human_size(v["size"])]
            rows.append(row)
    headers = ["REPOSITORY", "TAG"] + (["DIGEST"] if digests else []) + ["IMAGE ID", "CREATED", "SIZE"]
    return table(headers, rows)
