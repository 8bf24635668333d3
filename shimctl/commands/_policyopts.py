"""Flags run and create share for the restart policy and the health check (docker's), turned into the spec's
`restart` text and `healthcheck` map (shimproto.policy checks both)."""

from __future__ import annotations

import argparse

from ..exitcodes import Usage
from ..options import bounded, parse_duration

HEALTH_FLAGS = ("health_cmd", "health_interval", "health_timeout", "health_start_period", "health_retries")


def _duration(text: str) -> int:
    try:
        return bounded(parse_duration(text), text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid duration {text!r} (use e.g. 30s, 1m30s, 500ms)") from None


def _retries(text: str) -> int:
    if not (text.isascii() and text.isdigit()):
        raise argparse.ArgumentTypeError(f"invalid --health-retries {text!r}: must be a number >= 0")
    return bounded(int(text), text)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--restart", default="", metavar="POLICY",
                   help="no (default), on-failure[:MAX], always or unless-stopped")
    p.add_argument("--health-cmd", help="command run (by sh -c) inside the container to check its health")
    p.add_argument("--health-interval", type=_duration, metavar="DURATION", help="time between checks (30s)")
    p.add_argument("--health-timeout", type=_duration, metavar="DURATION",
                   help="a check that runs longer is killed and failed (30s)")
    p.add_argument("--health-start-period", type=_duration, metavar="DURATION",
                   help="failures in this time after a start do not count (0s)")
    p.add_argument("--health-retries", type=_retries, metavar="N", help="failures in a row for unhealthy (3)")
    p.add_argument("--no-healthcheck", action="store_true", help="disable any health check, the image's too")


def fields(a: argparse.Namespace) -> dict:
    """The spec's restart and healthcheck fields (an attached run's --rm is the CLI's own: checked here)."""
    if a.rm and a.restart not in ("", "no"):
        raise Usage("conflicting options: --restart and --rm")
    return {"restart": a.restart, "healthcheck": healthcheck(a)}


def healthcheck(a: argparse.Namespace) -> dict | None:
    """The spec's healthcheck map from the flags; None when none was given (the image's applies)."""
    given = [f for f in HEALTH_FLAGS if getattr(a, f) is not None]
    if a.no_healthcheck:
        if given:
            raise Usage("--no-healthcheck conflicts with the --health-* options")
        return {"Test": ["NONE"]}
    if not given:
        return None
    return {"Test": ["CMD-SHELL", a.health_cmd] if a.health_cmd is not None else [],
            "Interval": a.health_interval or 0, "Timeout": a.health_timeout or 0,
            "StartPeriod": a.health_start_period or 0, "Retries": a.health_retries or 0}
