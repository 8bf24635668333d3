"""shimctl stats [--no-stream] [--format table|json] ID...: CPU, memory, pids and OOM kills of containers.

The table is redrawn in place about once a second until interrupted (Ctrl-C exits 0); --no-stream prints one
sample. --format json prints one sample as a JSON array (for programs). A container that cannot be sampled (unknown,
stopped) is reported once on stderr and dropped; with none left, the command exits 1.
"""

from __future__ import annotations

import argparse
import sys
import time

from shimproto.errors import ShimdError

from .. import exitcodes, render
from ..cli import Cli

HELP = "CPU, memory and pids of containers, refreshed until interrupted"
ERRORS = exitcodes.OTHER
INTERVAL = 1.0
CLEAR = "\x1b[2J\x1b[H"  # erase the screen, cursor home


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-stream", action="store_true", help="print one sample and return")
    p.add_argument("--format", choices=["table", "json"], default="table", help="json: one sample")
    p.add_argument("ids", nargs="+", metavar="ID")


def sample(cli: Cli, ids: list[str]) -> tuple[list[dict], list[str]]:
    """One row per container that answered, and the ids that did not (each reported on stderr)."""
    rows, failed = [], []
    for id in ids:
        try:
            rows.append({"id": id, **cli.call("stats", {"id": id})})  # type: ignore[dict-item]
        except ShimdError as e:
            print(f"shimctl: {e.message}", file=sys.stderr)
            failed.append(id)
    return rows, failed


def table(rows: list[dict]) -> str:
    return render.table(["CONTAINER ID", "CPU (s)", "MEM USAGE", "MEM LIMIT", "PIDS", "OOM"], [
        [r["id"], f"{r['cpu_ns'] / 1e9:.3f}", render.human_size(r["memory_bytes"]),
         render.human_size(r["memory_limit"]), r["pids"], r["oom_kills"]] for r in rows])


def run(cli: Cli, a: argparse.Namespace) -> int:
    rows, failed = sample(cli, a.ids)
    if a.format == "json":
        print(render.to_json(rows))
        return 1 if failed else 0
    if a.no_stream:
        print(table(rows), end="")
        return 1 if failed else 0
    ids = [id for id in a.ids if id not in failed]
    clear = CLEAR if sys.stdout.isatty() else "\n"  # into a file or pipe: one table after another
    try:
        while ids:
            started = time.monotonic()
            sys.stdout.write(clear + table(rows))
            sys.stdout.flush()
            time.sleep(max(0.0, INTERVAL - (time.monotonic() - started)))
            rows, failed = sample(cli, ids)
            ids = [id for id in ids if id not in failed]
    except KeyboardInterrupt:
        return 0
    return 1
