"""shimctl events [--since SEQ] [--filter-id ID] [--no-follow] [--format text|json]: container events (create,
start, exit, ...) from now on, or replayed from a global sequence number; resumes across manager restarts."""

from __future__ import annotations

import argparse
import json

from shimproto.model import rfc3339

from .. import exitcodes, options
from ..cli import POLL, Cli

HELP = "stream container events (create, start, exit, ...)"
ERRORS = exitcodes.OTHER


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--since", type=options.parse_int, default=None,
                   help="replay from this global sequence number (0: all)")
    p.add_argument("--filter-id", dest="filter_id", default="", metavar="ID", help="only this container")
    p.add_argument("--no-follow", action="store_true", help="print what is recorded and return")
    p.add_argument("--format", choices=["text", "json"], default="text")


def line(ev: dict) -> str:
    extra = ""
    if ev["type"] == "exit":
        x = ev.get("exit") or {}
        extra = f" code={x.get('code')}" + (f" reason={x['reason']}" if x.get("reason") else "") + \
            (" oom_killed" if x.get("oom_killed") else "")
    elif ev.get("pid"):
        extra = f" pid={ev['pid']}"
    who = ev["id"] + (f" exec={ev['exec_id']}" if ev.get("exec_id") else "")
    return f"{rfc3339(ev['time'] or 0)} {ev['gseq']} {ev['type']} {who}{extra}"


def run(cli: Cli, a: argparse.Namespace) -> int:
    since = a.since
    if since is None:  # like docker events: from now on
        since = cli.call("events", {"since": 1 << 62, "timeout": 0})["seq"]  # type: ignore[index]
    while True:
        res = cli.call("events", {"since": since, "id": a.filter_id, "timeout": 0 if a.no_follow else POLL},
                       timeout=POLL + 15)
        for ev in res["events"]:  # type: ignore[index]
            print(json.dumps(ev) if a.format == "json" else line(ev), flush=True)
            since = ev["gseq"]
        if a.no_follow and not res["events"]:  # type: ignore[index]
            return 0
