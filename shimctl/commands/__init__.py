"""One module per verb, named in VERBS; a module is imported only when its verb runs (or for --help).

Each module has HELP (one line for the verb list), ERRORS (its column of the exit-code table, exitcodes.py),
add_arguments(parser) and run(cli, args) -> exit code. Its docstring is the verb's description in --help.
"""

from __future__ import annotations

import importlib
from types import ModuleType

VERBS = (
    "run", "create", "start", "restart", "exec", "attach", "ps", "inspect", "logs", "wait", "kill", "stop", "rm",
    "pause", "unpause", "update", "stats", "top", "events", "version", "info", "port", "network", "volume",
    "pull", "push", "images", "image", "tag", "rmi", "export", "commit",
)


def load(verb: str) -> ModuleType:
    return importlib.import_module(f"{__name__}.{verb}")
