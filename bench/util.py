"""Small helpers of the benchmark: running and timing commands, waiting on conditions, medians, progress.

Nothing here knows a system under test; bench/systems.py does.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PY = os.path.join(REPO, ".venv", "bin", "python")
MiB = 2**20


def manager_cmd(root: str, state: str, extra: str = "") -> tuple[list[str], dict[str, str]]:
    """The command and environment of a shimd manager whose containers have no network, as `ctr run` and a bare
    runc bundle make them: the figures compare the same work (bridge networking through the CNI plugins is a
    create's largest cost), and the benchmark never touches the host's network. extra: more of its config file."""
    config = os.path.join(os.path.dirname(root), f"{os.path.basename(root)}-config.toml")
    with open(config, "w") as f:
        f.write('[container]\nnetwork = "none"\n' + extra)
    env = {k: v for k, v in os.environ.items() if k != "SHIMD_DEFAULT_NETWORK"}
    return [PY, "-m", "manager", "--config", config, "--root", root, "--state", state], env


def run(cmd: list[str], check: bool = True, timeout: float = 60, capture: bool = False) -> subprocess.CompletedProcess:
    """Run cmd with no stdin. runc without a terminal hands its stdio to the container: a pipe there would never
    close, so runc (and any command not captured) gets /dev/null; stderr is kept for the error message."""
    out = subprocess.PIPE if capture else subprocess.DEVNULL
    err = subprocess.DEVNULL if cmd[0] == "runc" else subprocess.PIPE
    p = subprocess.run(cmd, timeout=timeout, cwd=REPO, stdin=subprocess.DEVNULL, stdout=out, stderr=err)
    if check and p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: exit {p.returncode}: {_text(p.stderr)}")
    return p


def timed(cmd: list[str], expect: int = 0) -> float:
    """Seconds from spawn to exit of cmd, as a user sees it."""
    t0 = time.perf_counter()
    p = run(cmd, check=False)
    took = time.perf_counter() - t0
    if p.returncode != expect:
        raise RuntimeError(f"{' '.join(cmd)}: exit {p.returncode} (expected {expect}): {_text(p.stderr)}")
    return took


def _text(b: bytes | None) -> str:
    return (b or b"").decode(errors="replace").strip()


def wait_for(pred: Callable[[], bool], timeout: float, what: str, interval: float = 0.005) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


def median(xs: list[float]) -> float | None:
    return statistics.median(xs) if xs else None


def say(msg: str) -> None:
    """Progress on stderr, with the time, so a long run shows where it is."""
    print(f"bench {time.strftime('%H:%M:%S')}: {msg}", file=sys.stderr, flush=True)


def rotate(items: list, i: int) -> list:
    """items rotated by i: the order the systems take turns in iteration i."""
    k = i % len(items)
    return items[k:] + items[:k]
