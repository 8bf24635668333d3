"""Typed wrapper of an OCI runtime CLI (runc by default, crun optional) and OCI bundle building.

Knows nothing of the shim: processes are started and waited for through a Monitor that the caller supplies, so
that the caller's single reaper stays the only waiter. Imports nothing else of ours.
"""

from .errors import AlreadyExists, CannotInvoke, CommandNotFound, NotFound, NotRunning, RuntimeError_
from .runc import Monitor, Runc

__all__ = ["AlreadyExists", "CannotInvoke", "CommandNotFound", "Monitor", "NotFound", "NotRunning", "Runc",
           "RuntimeError_"]
