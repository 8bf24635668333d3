"""shimctl ps [-a] [-q] [--filter KEY=VALUE]... [--format table|json]: list containers (running and paused ones,
every one with -a).

Filters are docker's: status=created|running|paused|restarting|exited (stopped is ours for exited), name=TEXT
(a part of the id) and label=KEY or label=KEY=VALUE (a label set by -l/--label or the image's). Several values of
one key match any of them (label: must all match, as docker's), different keys must all match. A status filter lists
stopped containers without -a. The table shows times as docker does ("Up 5 minutes", "3 minutes ago"); json
keeps the manager's full RFC 3339 timestamps. When a listed container belongs to a Kubernetes pod (the labels a CRI
server sets, POD_LABELS), the table has a POD column, NAMESPACE/NAME ("-" for the others); otherwise none.
"""

from __future__ import annotations

import argparse
import time

from shimproto.model import CREATED, PAUSED, RESTARTING, RUNNING, STOPPED

from .. import exitcodes, render
from ..cli import Cli

HELP = "list containers"
ERRORS = exitcodes.OTHER
# docker's status words -> ours; removing and dead are docker's too but never ours: they match nothing
POD_LABELS = ("io.kubernetes.pod.namespace", "io.kubernetes.pod.name")
STATUS_WORDS = {CREATED: CREATED, RUNNING: RUNNING, PAUSED: PAUSED, STOPPED: STOPPED, "exited": STOPPED,
                RESTARTING: RESTARTING, "removing": "", "dead": ""}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-a", "--all", action="store_true", help="include stopped containers")
    p.add_argument("-q", "--quiet", action="store_true", help="only ids")
    p.add_argument("-f", "--filter", action="append", default=[], type=parse_filter, metavar="KEY=VALUE",
                   help="status=STATUS, name=TEXT, label=KEY[=VALUE]; repeat to combine")
    p.add_argument("--format", choices=["table", "json"], default="table")


def parse_filter(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or key not in ("status", "name", "label") or key == "label" and not value.partition("=")[0]:
        raise argparse.ArgumentTypeError(f"invalid filter {text!r}: use status=STATUS, name=TEXT or "
                                         f"label=KEY[=VALUE]")
    if key == "status" and value not in STATUS_WORDS:
        raise argparse.ArgumentTypeError(
            f"invalid filter {text!r}: status is one of {', '.join(sorted(STATUS_WORDS))}")
    return key, value


def _labelled(labels: dict, want: str) -> bool:
    key, sep, value = want.partition("=")
    return key in labels and (not sep or labels[key] == value)


def matches(c: dict, filters: list[tuple[str, str]]) -> bool:
    """Same key: any value matches (label: every one, as docker); different keys: every key matches."""
    keys = {k for k, _ in filters}
    for key in keys:
        values = [v for k, v in filters if k == key]
        if key == "status" and c["status"] not in {STATUS_WORDS[v] for v in values}:
            return False
        if key == "name" and not any(v in c["id"] for v in values):
            return False
        if key == "label" and not all(_labelled(c.get("labels") or {}, v) for v in values):
            return False
    return True


def run(cli: Cli, a: argparse.Namespace) -> int:
    every = a.all or any(k == "status" for k, _ in a.filter)
    rows = [c for c in cli.call("list", {"all": every}) if matches(c, a.filter)]  # type: ignore[union-attr]
    if a.format == "json":
        print(render.to_json(rows))
    elif a.quiet:
        for c in rows:
            print(c["id"])
    else:
        now = time.time()
        pods = [pod(c) for c in rows]
        extra = any(pods)
        print(render.table(["CONTAINER ID", "IMAGE", "COMMAND", "CREATED", "STATUS", "PID", "PORTS"] +
                           ["POD"] * extra, [
            [c["id"], c["image"] or "-", " ".join(c["args"])[:40], render.ago(c["created_at"], now),
             render.status(c, now), c["pid"] if c["status"] in (RUNNING, PAUSED) and c["pid"] else "-",
             render.ports(c.get("ports") or [])] + [p or "-"] * extra
            for c, p in zip(rows, pods, strict=True)]), end="")
    return 0


def pod(c: dict) -> str:
    """NAMESPACE/NAME of the container's Kubernetes pod, "" when it is not a pod's."""
    labels = c.get("labels") or {}
    ns, name = (labels.get(k) for k in POD_LABELS)
    return f"{ns}/{name}" if isinstance(ns, str) and isinstance(name, str) and ns and name else ""
