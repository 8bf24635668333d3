"""Exit codes: the one table from an error's class to shimctl's exit code (docker's numbers).

A verb says which column of the table it uses (its ERRORS): verbs that make a container (run, create) fail with
125 whatever the daemon refused; verbs that launch a process of an existing container (start, exec) give 125 when
the daemon or the runtime failed but 1 when the request named a container that cannot do it, as docker does
(`docker start nosuch`, `docker exec` into a stopped container); every other verb exits 1 on error. Any verb exits
125 when no manager runs at all. 126 and 127 say that the container's command cannot be invoked or does not exist.
The container's own code, for run, start -a, exec and wait, is not an error and never passes through here.
"""

from __future__ import annotations

import argparse

from shimproto.errors import CannotInvoke, CommandNotFound, InvalidState, ManagerNotRunning, NotFound, ShimdError

FAILED = 1
USAGE = 2
DAEMON = 125  # the daemon or the request failed before the command ran
CANNOT_INVOKE = 126
NOT_FOUND = 127
INTERRUPTED = 130  # 128 + SIGINT

# the columns
CREATE = "create"  # run, create
LAUNCH = "launch"  # start, exec
OTHER = "other"


class Usage(Exception):
    """A command line the parser accepted but the verb cannot use ("run needs an IMAGE")."""


class AfterStart(Exception):
    """The container started, then following it failed: not the daemon's 125."""


# error class -> exit code per column; the first class the error is an instance of wins
TABLE: tuple[tuple[type[BaseException], dict[str, int]], ...] = (
    (ManagerNotRunning, {CREATE: DAEMON, LAUNCH: DAEMON, OTHER: DAEMON}),  # docker's "Cannot connect" is 125 too
    (CommandNotFound, {CREATE: NOT_FOUND, LAUNCH: NOT_FOUND, OTHER: FAILED}),
    (CannotInvoke, {CREATE: CANNOT_INVOKE, LAUNCH: CANNOT_INVOKE, OTHER: FAILED}),
    (AfterStart, {CREATE: FAILED, LAUNCH: FAILED, OTHER: FAILED}),
    (Usage, {CREATE: DAEMON, LAUNCH: USAGE, OTHER: USAGE}),
    (argparse.ArgumentTypeError, {CREATE: DAEMON, LAUNCH: USAGE, OTHER: USAGE}),
    (NotFound, {CREATE: DAEMON, LAUNCH: FAILED, OTHER: FAILED}),
    (InvalidState, {CREATE: DAEMON, LAUNCH: FAILED, OTHER: FAILED}),
    (ShimdError, {CREATE: DAEMON, LAUNCH: DAEMON, OTHER: FAILED}),
)


def code(column: str, err: BaseException) -> int:
    for cls, codes in TABLE:
        if isinstance(err, cls):
            return codes[column]
    raise err


def usage_code(column: str) -> int:
    """The exit code of a command line the parser refused."""
    return DAEMON if column == CREATE else USAGE


def message(err: BaseException) -> str:
    return err.message if isinstance(err, ShimdError) else str(err)
