"""The manager's container views -> CRI messages (sandboxes, containers, their statuses and stats)."""

from __future__ import annotations

import json
import os
import time

from shimproto.model import CREATED, PAUSED, RESTARTING, RUNNING, STOPPED

from .meta import CriMeta, ns
from .pb import api_pb2 as pb

CONTAINER_STATES = {CREATED: pb.CONTAINER_CREATED, RUNNING: pb.CONTAINER_RUNNING, PAUSED: pb.CONTAINER_RUNNING,
                    RESTARTING: pb.CONTAINER_RUNNING, STOPPED: pb.CONTAINER_EXITED}
ALIVE = (RUNNING, PAUSED)


def sandbox_state(view: dict) -> int:
    return pb.SANDBOX_READY if view.get("status") in ALIVE else pb.SANDBOX_NOTREADY


def container_state(view: dict) -> int:
    return CONTAINER_STATES.get(view.get("status", ""), pb.CONTAINER_UNKNOWN)


def sandbox_metadata(m: CriMeta) -> pb.PodSandboxMetadata:
    return pb.PodSandboxMetadata(name=m.name, uid=m.uid, namespace=m.namespace, attempt=m.attempt)


def container_metadata(m: CriMeta) -> pb.ContainerMetadata:
    return pb.ContainerMetadata(name=m.name, attempt=m.attempt)


def pod_sandbox(view: dict, m: CriMeta) -> pb.PodSandbox:
    return pb.PodSandbox(id=view["id"], metadata=sandbox_metadata(m), state=sandbox_state(view),
                         created_at=ns(view.get("created_at")), labels=m.labels, annotations=m.annotations,
                         runtime_handler=m.extra.get("runtime_handler", ""))


def sandbox_status(view: dict, m: CriMeta) -> pb.PodSandboxStatus:
    x = m.extra
    options = pb.NamespaceOption(network=x.get("network", 0), pid=x.get("pid", 0), ipc=x.get("ipc", 0))
    return pb.PodSandboxStatus(
        id=view["id"], metadata=sandbox_metadata(m), state=sandbox_state(view),
        created_at=ns(view.get("created_at")), network=pb.PodSandboxNetworkStatus(ip=view.get("ip", "")),
        linux=pb.LinuxPodSandboxStatus(namespaces=pb.Namespace(options=options)), labels=m.labels,
        annotations=m.annotations, runtime_handler=x.get("runtime_handler", ""))


def container(view: dict, m: CriMeta, image_id: str) -> pb.Container:
    return pb.Container(id=view["id"], pod_sandbox_id=m.pod, metadata=container_metadata(m),
                        image=pb.ImageSpec(image=m.image), image_ref=image_id, state=container_state(view),
                        created_at=ns(view.get("created_at")), labels=m.labels, annotations=m.annotations)


def reason(view: dict) -> str:
    if container_state(view) != pb.CONTAINER_EXITED:
        return ""
    if view.get("oom_killed"):
        return "OOMKilled"
    return "Completed" if view.get("exit_code") == 0 else "Error"


def container_status(view: dict, m: CriMeta, image_id: str) -> pb.ContainerStatus:
    state = container_state(view)
    mounts = [pb.Mount(container_path=x["container_path"], host_path=x["host_path"], readonly=x["readonly"],
                       propagation=x["propagation"]) for x in m.mounts]
    return pb.ContainerStatus(
        id=view["id"], metadata=container_metadata(m), state=state, created_at=ns(view.get("created_at")),
        started_at=ns(view.get("started_at")) if state != pb.CONTAINER_CREATED else 0,
        finished_at=ns(view.get("exited_at")) if state == pb.CONTAINER_EXITED else 0,
        exit_code=view.get("exit_code") or 0 if state == pb.CONTAINER_EXITED else 0,
        image=pb.ImageSpec(image=m.image), image_ref=image_id, reason=reason(view),
        message=view.get("exit_reason", "") if state == pb.CONTAINER_EXITED else "", labels=m.labels,
        annotations=m.annotations, mounts=mounts, log_path=m.log_path or view.get("log_path", ""))


def verbose_info(view: dict) -> dict[str, str]:
    keep = ("pid", "shim_pid", "status", "bundle", "cgroup", "spec")
    return {"info": json.dumps({k: view.get(k) for k in keep}, default=str)}


def container_stats(view: dict, m: CriMeta, raw: dict | None, layer_dir: str) -> pb.ContainerStats:
    now = time.time_ns()
    raw = raw or {}
    used, inodes = du(layer_dir)
    return pb.ContainerStats(
        attributes=pb.ContainerAttributes(id=view["id"], metadata=container_metadata(m), labels=m.labels,
                                          annotations=m.annotations),
        cpu=pb.CpuUsage(timestamp=now, usage_core_nano_seconds=pb.UInt64Value(value=int(raw.get("cpu_ns") or 0))),
        memory=pb.MemoryUsage(timestamp=now,
                              working_set_bytes=pb.UInt64Value(value=int(raw.get("memory_bytes") or 0)),
                              usage_bytes=pb.UInt64Value(value=int(raw.get("memory_bytes") or 0))),
        writable_layer=pb.FilesystemUsage(timestamp=now, fs_id=pb.FilesystemIdentifier(mountpoint=layer_dir),
                                          used_bytes=pb.UInt64Value(value=used),
                                          inodes_used=pb.UInt64Value(value=inodes)))


def du(path: str) -> tuple[int, int]:
    """Bytes and inodes under path (0, 0 when it is gone), not following links."""
    used = inodes = 0
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            try:
                st = os.lstat(os.path.join(root, name))
            except OSError:
                continue
            used += st.st_blocks * 512
            inodes += 1
    return used, inodes
