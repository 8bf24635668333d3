"""info {} -> {root, state, runtime, cgroup_version, containers, running, paused, stopped}: the manager's setup.

root and state are its directories, runtime the OCI runtime binary it drives, cgroup_version 2 when
/sys/fs/cgroup is the unified hierarchy and 1 otherwise (a hybrid host counts as 1, as docker says). The counts
are those of `list {all}`: containers is every one, stopped counts created ones too (docker's Stopped).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from shimproto.model import PAUSED, RUNNING
from shimproto.wire import Params

from . import list as list_command

if TYPE_CHECKING:
    from ..registry import Registry

NAME = "info"
CGROUP_ROOT = "/sys/fs/cgroup"


def cgroup_version(root: str = CGROUP_ROOT) -> int:
    return 2 if os.path.exists(os.path.join(root, "cgroup.controllers")) else 1


async def handle(m: Registry, p: Params) -> dict:
    statuses = [c["status"] for c in await list_command.handle(m, Params(NAME, {"all": True}))]
    running, paused = statuses.count(RUNNING), statuses.count(PAUSED)
    return {"root": m.store.root, "state": m.store.state, "runtime": m.runtime, "cgroup_version": cgroup_version(),
            "containers": len(statuses), "running": running, "paused": paused,
            "stopped": len(statuses) - running - paused}
