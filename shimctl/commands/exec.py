"""shimctl exec [OPTIONS] ID CMD...: run a process in a running container and exit with its code.

-u takes UID[:GID] or a user name of the container. 126 when the command cannot be invoked, 127 when it does not
exist, 125 when the daemon failed; 1 when the container cannot take an exec (not running, unknown).
"""

from __future__ import annotations

import argparse
import secrets

from shimproto.errors import ShimdError

from .. import exitcodes, options, stream
from ..cli import Cli

HELP = "run a process in a running container"
ERRORS = exitcodes.LAUNCH


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-d", "--detach", action="store_true", help="do not wait; its output is discarded")
    p.add_argument("-i", "--interactive", action="store_true", help="send our stdin to it")
    p.add_argument("-t", "--tty", action="store_true", help="give it a terminal")
    p.add_argument("-e", "--env", action="append", default=[], help="environment variable NAME=VALUE")
    p.add_argument("-w", "--workdir", default="", help="working directory inside the container")
    p.add_argument("-u", "--user", default="", metavar="UID[:GID]|NAME", help="user (and group) to run it as")
    p.add_argument("id", metavar="ID")
    p.add_argument("args", nargs=argparse.REMAINDER, metavar="CMD ...")


def run(cli: Cli, a: argparse.Namespace) -> int:
    cmd = options.command(a.args)
    if not cmd:
        raise exitcodes.Usage("exec needs a command")
    exec_id = secrets.token_hex(6)
    params = {"id": a.id, "exec_id": exec_id, "args": cmd, "env": options.env_list(a.env), "cwd": a.workdir,
              "tty": a.tty, "stdin": a.interactive, "detach": a.detach}
    if a.user:
        params["user"] = a.user
    cli.call("exec", params, timeout=60)
    if a.detach:
        return 0
    try:
        return int(stream.attach(cli, a.id, exec_id, 0, stdin=a.interactive, tty=a.tty))  # type: ignore[arg-type]
    finally:
        try:
            cli.call("delete", {"id": a.id, "exec_id": exec_id})
        except ShimdError:
            pass
