"""Values the command line carries, parsed as docker parses them: sizes, times, detach keys, env and log options.

Each parser is pure and raises argparse.ArgumentTypeError (as an argparse `type=`) or Usage with the bad value."""

from __future__ import annotations

import argparse
import json
import os
import re
import time

from .exitcodes import Usage

DEFAULT_DETACH_KEYS = "ctrl-p,ctrl-q"


INT64_MAX = 2**63 - 1  # what msgpack's signed integers, the manager's limits and the kernel's files hold


def bounded(value: int, text: str) -> int:
    """value, or a usage error naming text when no request could carry it (the manager checks each field's own
    range; this keeps a huge number from failing in the encoder instead)."""
    if not -INT64_MAX - 1 <= value <= INT64_MAX:
        raise argparse.ArgumentTypeError(f"{text!r} is out of range (at most {INT64_MAX})")
    return value


def parse_int(text: str) -> int:
    """An integer flag (argparse's int, bounded)."""
    try:
        return bounded(int(text), text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid integer {text!r}") from None


def parse_size(text: str) -> int:
    units = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3}
    t = text.strip().lower().removesuffix("ib").removesuffix("b") if text else ""
    num, unit = (t[:-1], t[-1]) if t and t[-1] in "kmg" else (t, "")
    try:
        value = int(float(num) * units[unit])
    except (ValueError, KeyError, OverflowError):
        raise argparse.ArgumentTypeError(f"invalid size {text!r} (use e.g. 64m, 1g)") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"invalid size {text!r}: must be positive")
    return bounded(value, text)


_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNIT_NS = {"ns": 1, "us": 10**3, "µs": 10**3, "ms": 10**6, "s": 10**9, "m": 60 * 10**9, "h": 3600 * 10**9}
_UNIX = re.compile(r"\d+(\.\d{1,9})?")


def parse_duration(text: str) -> int:
    """Go's duration syntax (10m, 1h30m, 42s, 1.5h, 300ms) -> nanoseconds; ValueError if it is not one."""
    pos, total = 0, 0
    for m in _DURATION_PART.finditer(text):
        if m.start() != pos:
            break
        total += int(float(m.group(1)) * _UNIT_NS[m.group(2)])
        pos = m.end()
    if not text or pos != len(text):
        raise ValueError(text)
    return total


def parse_time(text: str, now_ns: int | None = None) -> int:
    """Docker's TIME for --since/--until: RFC 3339 (local time when it names no zone), a unix timestamp
    (seconds, with up to 9 decimals) or a duration before now (10m, 1h30m) -> unix nanoseconds."""
    now_ns = time.time_ns() if now_ns is None else now_ns
    t = text.strip()
    if _UNIX.fullmatch(t):
        secs, _, frac = t.partition(".")
        return int(secs) * 10**9 + int(frac.ljust(9, "0") or 0)
    try:
        return now_ns - parse_duration(t)
    except ValueError:
        pass
    from datetime import datetime

    try:
        d = datetime.fromisoformat(t)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"invalid time {text!r} (use RFC 3339 like 2026-12-01T10:00:00Z, a unix timestamp or a duration "
            f"like 10m)") from None
    frac = re.search(r"\.(\d+)", t.partition("T")[2] or t.partition(" ")[2])
    nanos = int(frac.group(1)[:9].ljust(9, "0")) if frac else 0  # datetime keeps microseconds only
    return int(d.replace(microsecond=0).timestamp()) * 10**9 + nanos


_CTRL = {"@": 0, "[": 27, "\\": 28, "]": 29, "^": 30, "_": 31}


def parse_detach_keys(text: str) -> bytes:
    """Docker's key syntax: comma-separated `ctrl-<letter>` (or ctrl-@, ctrl-[, ctrl-\\, ctrl-], ctrl-^, ctrl-_)
    and single characters -> the bytes a terminal sends for them."""
    out = bytearray()
    for key in text.split(","):
        k = key.strip()
        low = k.lower()
        if low.startswith("ctrl-") and len(k) == 6 and (k[5].isascii() and k[5].isalpha() or k[5] in _CTRL):
            out.append(ord(low[5]) - ord("a") + 1 if k[5].isalpha() else _CTRL[k[5]])
        elif len(k) == 1 and k.isascii():
            out += k.encode()
        else:
            raise argparse.ArgumentTypeError(
                f"invalid detach keys {text!r}: use ctrl-<letter> or single characters, comma separated")
    if not out:
        raise argparse.ArgumentTypeError("invalid detach keys '': give at least one key")
    return bytes(out)


def env_list(items: list[str]) -> list[str]:
    """-e NAME=VALUE as given; -e NAME takes our own value (skipped when unset). The manager adds PATH when the
    image's Env and these have none (the image's PATH is kept: a default here would replace it)."""
    out = []
    for item in items:
        if "=" not in item:
            value = os.environ.get(item)
            if value is None:
                continue
            item = f"{item}={value}"
        out.append(item)
    return out


def parse_swap(text: str) -> int:
    """--memory-swap: a size, or -1 for unlimited swap."""
    return -1 if text.strip() == "-1" else parse_size(text)


def parse_cpus(text: str) -> int:
    """--cpus 1.5 -> nanoCPUs (docker's NanoCPUs)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid --cpus {text!r}: use a number like 0.5 or 2") from None
    if not value > 0 or value > 2**32:
        raise argparse.ArgumentTypeError(f"invalid --cpus {text!r}: must be positive")
    return round(value * 1e9)


def env_file(path: str) -> list[str]:
    """docker's --env-file: NAME=VALUE lines (the value as written, no quotes taken off), NAME alone takes our own
    value (skipped when unset), blank lines and lines starting with # skipped."""
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise Usage(f"--env-file {path}: {getattr(e, 'strerror', None) or e}") from None
    out = []
    for n, raw in enumerate(lines, 1):
        line = raw.lstrip()
        if not line or line.startswith("#"):
            continue
        name = line.partition("=")[0]
        if not name or any(c.isspace() for c in name):
            raise Usage(f"--env-file {path}, line {n}: invalid variable name {name!r}")
        out.append(line)
    return env_list(out)


def key_values(items: list[str], flag: str) -> dict[str, str]:
    """KEY=VALUE flags (--sysctl) -> a map; a missing = is refused."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise Usage(f"invalid {flag} {item!r}: use KEY=VALUE")
        out[key] = value
    return out


def log_opts(opts: list[str]) -> dict:
    """--log-opt max-size=SIZE / max-file=N -> the spec's log_max_size / log_max_files."""
    out: dict = {}
    for opt in opts:
        key, sep, value = opt.partition("=")
        try:
            if key == "max-size" and sep:
                out["log_max_size"] = parse_size(value)
            elif key == "max-file" and sep and value.isascii() and value.isdigit() and int(value) >= 2:
                out["log_max_files"] = bounded(int(value), value)
            else:
                raise Usage(f"invalid --log-opt {opt!r} (max-size=SIZE, max-file=N with N >= 2)")
        except argparse.ArgumentTypeError as e:
            raise Usage(f"invalid --log-opt {opt!r}: {e}") from None
    return out


def command(args: list[str]) -> list[str]:
    """argparse.REMAINDER keeps a leading `--`: drop it."""
    return args[1:] if args and args[0] == "--" else list(args)


def security_opts(opts: list[str], max_size: int = 256 * 1024) -> list[str]:
    """--security-opt as sent: seccomp=PATH becomes seccomp=<the file's JSON>, as docker's CLI does (the manager
    and the shim never read a client's path)."""
    out = []
    for opt in opts:
        key, sep, value = opt.partition("=") if opt.startswith("seccomp=") else opt.partition(":")
        if key != "seccomp" or not sep or value == "unconfined" or value.lstrip().startswith("{"):
            out.append(opt)
            continue
        try:
            with open(value, "rb") as f:
                data = f.read(max_size + 1)
        except OSError as e:
            raise Usage(f"--security-opt seccomp={value}: {e.strerror}") from None
        if len(data) > max_size:
            raise Usage(f"--security-opt seccomp={value}: the profile is over {max_size // 1024} KiB")
        try:
            if not isinstance(json.loads(data), dict):
                raise ValueError("an array or a value")
        except ValueError as e:  # UnicodeDecodeError too
            raise Usage(f"--security-opt seccomp={value}: not a JSON object: {e}") from None
        out.append("seccomp=" + data.decode())
    return out
