"""shimctl port ID [CTRPORT[/PROTO]]: the container's published ports, as docker prints them
("80/tcp -> 0.0.0.0:8080"), or only the host address of one container port."""

from __future__ import annotations

import argparse

from .. import exitcodes
from ..cli import Cli

HELP = "list a container's published ports"
ERRORS = exitcodes.OTHER


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("id", metavar="ID")
    p.add_argument("port", nargs="?", metavar="CTRPORT[/PROTO]")


def run(cli: Cli, a: argparse.Namespace) -> int:
    ports = cli.call("inspect", {"id": a.id}).get("ports") or []  # type: ignore[union-attr]
    if a.port:
        num, _, proto = a.port.partition("/")
        want = [p for p in ports if str(p["container_port"]) == num and p["protocol"] == (proto or "tcp")]
        if not want:
            raise exitcodes.Usage(f"no public port '{a.port}' published for {a.id}")
        for p in want:
            print(f"{p['host_ip'] or '0.0.0.0'}:{p['host_port']}")
        return 0
    for p in ports:
        print(f"{p['container_port']}/{p['protocol']} -> {p['host_ip'] or '0.0.0.0'}:{p['host_port']}")
    return 0
