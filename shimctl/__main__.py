"""shimctl [--address PATH] COMMAND ...: docker-like verbs against a shimd manager.

Finds the verb first and imports only its module (shimctl/commands/<verb>.py), so a verb pays only for what it
uses. Exit codes follow docker (exitcodes.py): the container's code for run, start -a, exec and wait's printed
value; 125, 126, 127 when a container or process could not be made or started; 1 for any other failed command.
"""

from __future__ import annotations

import argparse
import os
import sys

from . import commands, exitcodes
from .cli import DEFAULT_ADDRESS, Cli


def _columns() -> int:
    """The terminal's width as shutil.get_terminal_size finds it (COLUMNS, else stdout's terminal, else 80)."""
    try:
        return int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        pass
    try:
        return os.get_terminal_size(sys.__stdout__.fileno()).columns or 80  # type: ignore[union-attr]
    except (AttributeError, ValueError, OSError):
        return 80


class Formatter(argparse.HelpFormatter):
    """argparse's formatter given its width, so that it does not import shutil for it (with bz2, lzma and zlib:
    a few ms of every command, for help that is seldom printed; argparse makes a formatter per argument added)."""

    def __init__(self, prog: str, indent_increment: int = 2, max_help_position: int = 24,
                 width: int | None = None) -> None:
        super().__init__(prog, indent_increment, max_help_position, _columns() - 2 if width is None else width)


class RawFormatter(Formatter, argparse.RawDescriptionHelpFormatter):
    """A verb's help: its module's docstring as written."""


class Parser(argparse.ArgumentParser):
    """Usage errors in one line, as every other error; exit 125 for the verbs that make a container, else 2."""

    usage_code = exitcodes.USAGE

    def __init__(self, *args, **kwargs) -> None:  # noqa: ANN002, ANN003 - argparse's own
        kwargs.setdefault("formatter_class", Formatter)  # the verbs' own sub-verbs too (image ls, volume rm, ...)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> None:  # type: ignore[override]
        print(f"{self.prog}: {message} (see '{self.prog} --help')", file=sys.stderr)
        sys.exit(self.usage_code)


def verb_of(argv: list[str]) -> str:
    """The first word that is not a global option or its value ("" if none)."""
    it = iter(argv)
    for word in it:
        if word == "--address":
            next(it, None)
        elif not word.startswith("-"):
            return word
    return ""


def parser(argv: list[str]) -> argparse.ArgumentParser:
    """The parser for this command line: every verb's arguments only when no known verb is named (help, typos)."""
    ap = Parser(prog="shimctl", description="control a shimd manager")
    ap.add_argument("--address", default=os.environ.get("SHIMD_ADDRESS", DEFAULT_ADDRESS),
                    help="manager socket (env SHIMD_ADDRESS; default %(default)s)")
    sub = ap.add_subparsers(dest="cmd", required=True, metavar="COMMAND")
    verb = verb_of(argv)
    for name in (verb,) if verb in commands.VERBS else commands.VERBS:
        mod = commands.load(name)
        p = sub.add_parser(name, help=mod.HELP, description=mod.__doc__,
                           formatter_class=RawFormatter)
        p.usage_code = exitcodes.usage_code(mod.ERRORS)  # type: ignore[attr-defined]
        p.set_defaults(module=mod)
        mod.add_arguments(p)
    return ap


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    a = parser(argv).parse_args(argv)
    try:
        return a.module.run(Cli(a.address), a)
    except KeyboardInterrupt:
        return exitcodes.INTERRUPTED
    except BrokenPipeError:
        return 0
    except Exception as e:
        rc = exitcodes.code(a.module.ERRORS, e)  # re-raises what is not in the table: a bug shows its traceback
        print(f"shimctl: {exitcodes.message(e)}", file=sys.stderr)
        return rc


def entry() -> None:
    """The process's entry (the console script and `python -m shimctl`): main(), then out through os._exit once
    stdout and stderr are flushed, skipping the interpreter's teardown of zmq's context and of every module (about
    8 ms of each command). Every call has had its reply by then; nothing else is left to send."""
    rc = main()
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        pass
    try:
        sys.stderr.flush()
    except BrokenPipeError:
        pass
    os._exit(int(rc or 0))


if __name__ == "__main__":
    entry()
