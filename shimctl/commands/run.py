"""shimctl run [OPTIONS] IMAGE [CMD ...]: create and start a container, then stream its output and exit with its
code (128 + signal for a signal death). With -d, print its id once it runs and return.

125 when the container could not be made or started, 126 when its command cannot be invoked, 127 when it does not
exist. An attached --rm removes the container after reading its exit code.
"""

from __future__ import annotations

import argparse

from shimproto.errors import ShimdError

from .. import exitcodes
from ..cli import Cli
from . import create

HELP = "create and start a container"
ERRORS = exitcodes.CREATE


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-d", "--detach", action="store_true", help="print the id and return once it runs")
    create.add_arguments(p)


def run(cli: Cli, a: argparse.Namespace) -> int:
    # attached, the CLI removes the container itself: it must read the exit code first
    spec = create.spec(a, "run", auto_remove=a.rm and a.detach)
    id = create.create(cli, spec, start=True)
    if a.detach:
        print(id)
        return 0
    from .. import stream  # only an attached run reads the log (run -d does not pay for it)

    try:
        code = stream.attach(cli, id, "", 0, stdin=a.interactive, tty=a.tty, run=1)  # a restart's exit is not ours
    except ShimdError as e:
        raise exitcodes.AfterStart(e.message) from None
    if a.rm:
        cli.call("delete", {"id": id, "force": True})
    return int(code)  # type: ignore[arg-type]  # no detach keys: never None
