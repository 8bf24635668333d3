"""The local terminal for -t: raw mode while attached, and its size (sent again on every SIGWINCH)."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import termios
import tty
from collections.abc import Callable, Iterator


def is_tty() -> bool:
    return sys.stdin.isatty()


def size() -> tuple[int, int] | None:
    try:
        s = os.get_terminal_size(sys.stdout.fileno())
    except OSError:
        return None
    return s.lines, s.columns


@contextlib.contextmanager
def raw(on_resize: Callable[[int, int], None]) -> Iterator[None]:
    """Raw mode for stdin while the block runs, if it is a terminal; on_resize(rows, cols) now and on SIGWINCH."""
    if not is_tty():
        yield
        return
    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)

    def winch(*_: object) -> None:
        s = size()
        if s:
            on_resize(*s)

    old = signal.signal(signal.SIGWINCH, winch)
    tty.setraw(fd)
    try:
        winch()
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)
        signal.signal(signal.SIGWINCH, old)
