"""Planted bugs, for the tests that prove a check can fail: SHIMD_PLANT=name[,name...] makes the manager or a shim
misbehave in exactly one named way. Off (and free) unless the variable is set; never set outside tests.

Each name is used at exactly one place in the code, listed here with what it breaks.
"""

from __future__ import annotations

import os

NAMES = {
    # chaos invariants (tests/chaos)
    "drop-exit-event": "the manager never records a container's exit event",
    "wrong-exit-code": "the shim reports an exit code one higher than the real one",
    "lose-attach-line": "the shim's log reader skips one record",
    "failed-create-leaves-container": "a create that fails is not rolled back",
    "leave-runtime-state": "the shim skips `runc delete`: a removed container's runtime state and cgroups stay",
    # leak kinds (tests/leaks.py): leave-runtime-state above; a stray shim, a zombie under a shim, a mount in any
    # namespace, a cgroup and an orphaned container process are planted directly by tests/test_harness.py
}

_planted = frozenset(n for n in os.environ.get("SHIMD_PLANT", "").split(",") if n)


def planted(name: str) -> bool:
    """Is this bug planted? (The name must be one of NAMES, so a typo in a test cannot pass unnoticed.)"""
    if name not in NAMES:
        raise KeyError(f"unknown planted bug {name!r}")
    return name in _planted
