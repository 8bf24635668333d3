"""Planted bugs, for the tests that prove a check can fail: SHIMD_PLANT=name[,name...] makes the manager or a shim
misbehave in exactly one named way. Off (and free) unless the variable is set; never set outside tests.

Each name is used at exactly one place in the code, listed here with what it breaks.
"""

from __future__ import annotations

import os

NAMES = {
    # chaos invariants (tests/chaos; each is caught by the invariant named in tests/chaos/test_planted.py)
    "drop-exit-event": "the manager files a container's exit event under another type: no exit is reported",
    "duplicate-exit-event": "the manager records a container's exit event twice",
    "wrong-exit-code": "the shim reports a container's exit code one higher than the real one",
    "wrong-exec-exit-code": "the shim reports an exec process's exit code one higher than the real one",
    "lose-attach-line": "the shim's log reader skips the first line of every page holding more than one",
    "repeat-log-line": "the shim's log writer writes the record that crosses a log's first 4 KiB twice",
    "failed-create-leaves-container": "a create that fails is not rolled back: its container stays listed",
    "stopped-containers-vanish": "list --all leaves out stopped containers",
    "create-skips-start": "create {start: true} answers without starting: the container stays created",
    "remove-leaves-container": "rm forgets a container without deleting it: shim, container, runtime state stay",
    "leave-runtime-state": "the shim skips `runc delete`: a removed container's runtime state and cgroups stay",
    "restore-takes-shim-pid": "a restarted manager lists a running container with its shim's pid",
    "leak-shim-fd": "the shim opens (and never closes) a file on every state call",
    "restore-leaves-commit-paused": "a restarted manager ignores a commit's intent: the container it paused stays so",
    "restart-count-skips": "the shim's restart policy counts every restart twice (restart events 2, 4, 6...)",
    "hung-check-not-killed": "the shim leaves a health check that hangs past its timeout running (checks overlap)",
    "image-gc-keeps-layers": "the image store's collection never removes a layer directory",
    # leak kinds (tests/leaks.py): leave-runtime-state above; a stray shim or shim template, a zombie under a shim
    # or a zombie shim, a mount in any namespace, a cgroup and an orphaned container process are planted directly
    # by tests/test_harness.py (this design cannot make them without something else failing first)
}

_planted = frozenset(n for n in os.environ.get("SHIMD_PLANT", "").split(",") if n)


def planted(name: str) -> bool:
    """Is this bug planted? (The name must be one of NAMES, so a typo in a test cannot pass unnoticed.)"""
    if name not in NAMES:
        raise KeyError(f"unknown planted bug {name!r}")
    return name in _planted
