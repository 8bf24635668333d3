"""What a process may use of its container: the id, the bundle, the runtime, the reaper, the journal, the logger.

A process never holds its container. Work that spans processes (waiting for exec exits before the init's exit is
published, the OOM count, teardown after the init is deleted) is the container's, handed in as hooks.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from runtime.runc import Runc

from ..events import Journal
from ..reaper import Reaper


async def _nothing() -> None:
    return None


@dataclass(frozen=True)
class ProcessContext:
    id: str
    bundle: str
    runtime: Runc
    reaper: Reaper
    journal: Journal
    log: logging.LoggerAdapter


@dataclass(frozen=True)
class ExitHooks:
    """The container's part of a process's exit: what to await before it is published, and the OOM verdict."""

    before_exit: Callable[[], Awaitable[None]] = _nothing
    oom_killed: Callable[[], bool] = lambda: False
