"""shimctl logs [-f] [--tail N] [--since TIME] [--until TIME] [-t] ID: print a container's output, stdout to
stdout and stderr to stderr.

TIME is docker's: RFC 3339 (2026-12-01T10:00:00Z; local time when no zone is given), a unix timestamp, or a
duration before now (10m, 1h30m, 42s). -t prefixes every line with its RFC 3339 time (nanoseconds) and a space.
"""

from __future__ import annotations

import argparse

from .. import exitcodes, options, stream
from ..cli import Cli

HELP = "print a container's output"
ERRORS = exitcodes.OTHER


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-f", "--follow", action="store_true", help="keep printing new output until it exits")
    p.add_argument("-n", "--tail", default="all", type=parse_tail, metavar="N", help="only the last N lines")
    p.add_argument("--since", type=options.parse_time, metavar="TIME", help="only output from TIME on")
    p.add_argument("--until", type=options.parse_time, metavar="TIME", help="only output before TIME")
    p.add_argument("-t", "--timestamps", action="store_true", help="prefix each line with its time")
    p.add_argument("id", metavar="ID")


def parse_tail(text: str) -> int:
    if text == "all":
        return -1
    if not text.isascii() or not text.isdigit():
        raise argparse.ArgumentTypeError(f"invalid --tail {text!r}: a number of lines or 'all'")
    return int(text)


def run(cli: Cli, a: argparse.Namespace) -> int:
    window = {k: v for k, v in (("tail", a.tail), ("since", a.since), ("until", a.until)) if v not in (None, -1)}
    stream.print_logs(cli, a.id, a.follow, window=window, printer=stream.Printer(a.timestamps))
    return 0
