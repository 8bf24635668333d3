"""Rendering for people and for programs: aligned tables, human sizes and times (as docker words them), JSON.

Pure functions of their arguments (the current time is passed in), so the wording is tested without a daemon."""

from __future__ import annotations

import json
from datetime import datetime

from shimproto.model import CREATED, HEALTH_STARTING, PAUSED, RESTARTING, RUNNING, STOPPED


def table(headers: list[str], rows: list[list[object]], gap: int = 3) -> str:
    """Left-aligned columns as wide as their widest cell, `gap` spaces apart (docker's tabwriter)."""
    cells = [[str(c) for c in headers]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = [(" " * gap).join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    return "\n".join(lines) + "\n"


def to_json(obj: object) -> str:
    return json.dumps(obj, indent=1)


def human_size(n: float) -> str:
    if n >= 1 << 60:  # the kernel's "no limit"
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f}{unit}" if unit == "B" else f"{n:.1f}{unit}"
        n /= 1024
    return str(n)


def human_duration(seconds: float) -> str:
    """docker's units.HumanDuration: "Less than a second", "5 seconds", "About a minute", "3 hours", "2 weeks"."""
    s = int(seconds)
    if s < 1:
        return "Less than a second"
    if s == 1:
        return "1 second"
    if s < 60:
        return f"{s} seconds"
    minutes = s // 60
    if minutes == 1:
        return "About a minute"
    if minutes < 60:
        return f"{minutes} minutes"
    hours = int(seconds / 3600 + 0.5)
    if hours == 1:
        return "About an hour"
    if hours < 48:
        return f"{hours} hours"
    if hours < 24 * 7 * 2:
        return f"{hours // 24} days"
    if hours < 24 * 30 * 2:
        return f"{hours // 24 // 7} weeks"
    if hours < 24 * 365 * 2:
        return f"{hours // 24 // 30} months"
    return f"{int(seconds // 3600) // 24 // 365} years"


def parse_rfc3339(text: str) -> float:
    """2026-01-02T03:04:05.123456789Z -> unix seconds (to the microsecond)."""
    return datetime.fromisoformat(text).timestamp()


def ago(text: str | None, now: float) -> str:
    """An RFC 3339 time as "3 minutes ago" ("" when unknown)."""
    if not text:
        return ""
    return f"{human_duration(max(0.0, now - parse_rfc3339(text)))} ago"


def status(c: dict, now: float) -> str:
    """The STATUS column of `ps`: "Up 5 minutes", "Up 5 minutes (Paused)", "Up 2 minutes (healthy)", "Exited (137)
    2 seconds ago", "Restarting (1) 2 seconds ago", "Created"; from a list or inspect view. " (metadata
    unreadable)" after it when its meta.json could not be read (inspect says why)."""
    text = _status(c, now)
    return f"{text} (metadata unreadable)" if c.get("metadata_error") else text


def _status(c: dict, now: float) -> str:
    st = c.get("status")
    if st in (RUNNING, PAUSED):
        since = c.get("started_at") or c.get("created_at")
        up = f"Up {human_duration(max(0.0, now - parse_rfc3339(since)))}" if since else "Up"
        health = (c.get("health") or {}).get("status")
        if st == PAUSED:
            return up + " (Paused)"
        return up + (" (health: starting)" if health == HEALTH_STARTING else f" ({health})" if health else "")
    if st == RESTARTING:
        return f"Restarting ({c.get('exit_code')}) {ago(c.get('exited_at'), now)}".rstrip()
    if st == STOPPED:
        code = c.get("exit_code")
        out = "Exited" if code is None else f"Exited ({code})"
        return f"{out} {ago(c.get('exited_at'), now)}".rstrip()
    if st == CREATED:
        return "Created"
    return str(st).capitalize()


def port(p: dict) -> str:
    """docker's form of one published port: 0.0.0.0:8080->80/tcp"""
    return f"{p.get('host_ip') or '0.0.0.0'}:{p.get('host_port')}->{p.get('container_port')}/{p.get('protocol')}"


def ports(ps: list[dict]) -> str:
    return ", ".join(port(p) for p in ps)
