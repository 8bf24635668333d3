"""What the manager keeps of a container's restart policy and health check: the views of them, and the record of a
stop by the user in --root (`<root>/containers/ID/stopped-by-user`), which outlives a reboot: the shim enforces the
policy, but after a reboot only this record tells `unless-stopped` whether to start the container again.

The record follows docker's rule (shimproto.policy.stops_policy): written before a stop or a kill that ends the
policy's care is sent, removed once a user start worked.
"""

from __future__ import annotations

import os

from shimproto.policy import RestartPolicy, stops_policy
from shimproto.spec import ContainerSpec

MARK = "stopped-by-user"


def _mark(files_dir: str) -> str:
    return os.path.join(files_dir, MARK)


def user_kill(files_dir: str, spec: ContainerSpec, sig: int) -> None:
    if stops_policy(sig, spec.stop_signal) and not os.path.exists(_mark(files_dir)):
        with open(_mark(files_dir), "w"):
            pass


def user_start(files_dir: str) -> None:
    try:
        os.unlink(_mark(files_dir))
    except FileNotFoundError:
        pass


def after_reboot(files_dir: str, spec: ContainerSpec) -> bool:
    """Is this container started again when its shim and its state went away with the host?"""
    return RestartPolicy.parse(spec.restart).after_reboot(os.path.exists(_mark(files_dir)))


def view(spec: ContainerSpec, st: dict) -> dict:
    """inspect's restart and health fields from the shim's (or the event log's) view st."""
    health = None
    if st.get("health"):
        health = {"status": st["health"], "failing_streak": st.get("health_failing_streak", 0),
                  "log": st.get("health_log", [])}
    return {"restart_policy": str(RestartPolicy.parse(spec.restart)), "restart_count": st.get("restart_count", 0),
            "run": st.get("run", 0), "last_exits": st.get("last_exits", []), "health": health}
