"""shimctl pull [--tls-verify=false] [--authfile FILE] [--platform OS/ARCH] REF: fetch an image from a registry
into the manager's store (skopeo does the fetching; layers already stored are not unpacked again). On a terminal
it shows the layers fetched and the bytes so far on one line as it goes; it then prints the reference and the
image's digest on one line (-q: the reference only)."""

from __future__ import annotations

import argparse
import sys
import threading

from shimproto.errors import ShimdError

from .. import exitcodes
from ..cli import Cli
from ..render import human_size
from ._imageopts import TIMEOUT, add_registry_flags, authfile

HELP = "pull an image from a registry"
ERRORS = exitcodes.OTHER
POLL = 0.25  # seconds between two looks at the transfer


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_registry_flags(p)
    p.add_argument("--platform", default="", help="OS/ARCH[/VARIANT] of a multi-platform image (default: "
                   "linux/this machine's)")
    p.add_argument("-q", "--quiet", action="store_true", help="print the reference only")
    p.add_argument("ref", metavar="REF")


def progress_line(t: dict) -> str:
    """One transfer as a line: its state, the layers done of those known, the bytes in hand."""
    return f"{t['state']}: {t['layers_done']}/{t['layers']} layers, {human_size(t['bytes'])}"


def _with_progress(cli: Cli, params: dict) -> dict:
    """The pull on a connection of its own, in a thread, while this one shows its transfer once per POLL."""
    via = cli.connect()
    box: dict = {}

    def pull() -> None:
        try:
            box["view"] = cli.call("pull", params, timeout=TIMEOUT, via=via)
        except BaseException as e:  # raised again below, in the main thread
            box["error"] = e

    th = threading.Thread(target=pull, name="pull", daemon=True)
    th.start()
    shown = False
    while True:
        th.join(POLL / 2 if not shown else POLL)
        if not th.is_alive():
            break
        try:
            rows: list = cli.call("transfers", {"ref": params["ref"]}, timeout=5.0)  # type: ignore[assignment]
        except ShimdError:
            rows = []
        if rows:
            sys.stdout.write("\r\x1b[K" + progress_line(rows[0]))
            sys.stdout.flush()
            shown = True
    if "error" in box:
        if shown:
            sys.stdout.write("\r\x1b[K")
        raise box["error"]
    view = box["view"]
    n = len(view["layers"])
    sys.stdout.write(f"\r\x1b[Kpulled: {n}/{n} layers, {human_size(view['size'])} unpacked\n")
    return view


def run(cli: Cli, a: argparse.Namespace) -> int:
    params = {"ref": a.ref, "tls_verify": a.tls_verify, "authfile": authfile(a.authfile), "platform": a.platform}
    if sys.stdout.isatty() and not a.quiet:
        view = _with_progress(cli, params)
    else:
        view = cli.call("pull", params, timeout=TIMEOUT)  # type: ignore[assignment]
    print(a.ref if a.quiet else f"{a.ref} {view['digest']}")
    return 0
