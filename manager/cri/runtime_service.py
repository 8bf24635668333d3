"""runtime.v1.RuntimeService on the manager's API: pod sandboxes and their containers are ordinary shimd
containers (their CRI metadata in a label, manager/cri/meta.py), so `shimctl ps`, live-restore, events and the
chaos suite cover them; Exec, Attach and PortForward hand out URLs of the streaming server, whose streams go to
the shims (manager/cri/streambackend.py)."""

from __future__ import annotations

import logging
import os
import threading

from shimproto.errors import InvalidState, NotFound
from shimproto.model import RUNNING

from . import specs, views
from .calls import Manager, new_id, rpc
from .config import CriConfig
from .execsync import exec_sync
from .meta import CONTAINER, SANDBOX, CriMeta, id_matches, selected
from .pb import api_pb2 as pb
from .pb import api_pb2_grpc
from .streamapi import AttachRequest, ExecRequest, PortForwardRequest
from .streaming import StreamingServer

log = logging.getLogger("shimd.cri")

RUNTIME_NAME, RUNTIME_API = "shimd", "v1"
STOP_SANDBOX_TIMEOUT = 0  # containerd stops a pod's containers at once when the pod stops


class RuntimeService(api_pb2_grpc.RuntimeServiceServicer):
    def __init__(self, cfg: CriConfig, state: str, manager: Manager, streaming: StreamingServer) -> None:
        self.cfg, self.state, self.m, self.streaming = cfg, state, manager, streaming
        self._image_ids: dict[str, str] = {}  # manifest digest -> image id (immutable, so never stale)
        self._root = ""
        self._lock = threading.Lock()

    # --- lookups ---------------------------------------------------------------------------------------------

    def _all(self, kind: str) -> list[tuple[dict, CriMeta]]:
        out = []
        for v in self.m.query("list", {"all": True}):
            meta = CriMeta.of(v)
            if meta is not None and meta.kind == kind:
                out.append((v, meta))
        return out

    def _find(self, kind: str, wanted: str) -> tuple[dict, CriMeta]:
        """The sandbox or container named by id or unique id prefix; NotFound otherwise."""
        if not wanted:
            raise NotFound(f"no {kind} id given")
        try:
            v = self.m.query("inspect", {"id": wanted})
            meta = CriMeta.of(v)
            if meta is not None and meta.kind == kind:
                return v, meta
        except NotFound:
            pass
        hits = [(v, m) for v, m in self._all(kind) if v["id"].startswith(wanted)]
        if len(hits) != 1:
            what = "pod sandbox" if kind == SANDBOX else "container"
            raise NotFound(f"{what} {wanted!r} " + ("is ambiguous" if hits else "not found"))
        return hits[0]

    def _image_id(self, view: dict, meta: CriMeta) -> str:
        digest = view.get("image_digest", "")
        if digest in self._image_ids:
            return self._image_ids[digest]
        try:
            found = self.m.query("image_inspect", {"ref": meta.image})["id"]
        except NotFound:  # the built-in busybox is no stored image: its name is its reference
            return digest or meta.image
        if digest:
            self._image_ids[digest] = found
        return found

    def _root_dir(self) -> str:
        if not self._root:
            self._root = self.m.query("info")["root"]
        return self._root

    # --- runtime ---------------------------------------------------------------------------------------------

    @rpc
    def Version(self, request, context):
        v = self.m.query("version")
        return pb.VersionResponse(version="0.1.0", runtime_name=RUNTIME_NAME,
                                  runtime_version=str((v or {}).get("version", "0.1.0")),
                                  runtime_api_version=RUNTIME_API)

    @rpc
    def Status(self, request, context):
        self.m.query("ping")
        conds = [pb.RuntimeCondition(type="RuntimeReady", status=True)]
        try:
            specs.cni_conflist(self.cfg.cni_conf_dir)
            conds.append(pb.RuntimeCondition(type="NetworkReady", status=True))
        except specs.NoNetworkConfig as e:
            conds.append(pb.RuntimeCondition(type="NetworkReady", status=False, reason="NetworkPluginNotReady",
                                             message=str(e)))
        return pb.StatusResponse(status=pb.RuntimeStatus(conditions=conds))

    @rpc
    def UpdateRuntimeConfig(self, request, context):
        return pb.UpdateRuntimeConfigResponse()

    # --- sandboxes -------------------------------------------------------------------------------------------

    @rpc
    def RunPodSandbox(self, request, context):
        if self.cfg.sandbox_image:
            self._ensure_image(self.cfg.sandbox_image)
        sid = new_id()
        spec = specs.sandbox_spec(sid, request.config, self.cfg, request.runtime_handler)
        self.m.call("create", {"spec": spec, "start": True})
        return pb.RunPodSandboxResponse(pod_sandbox_id=sid)

    def _ensure_image(self, ref: str) -> None:
        try:
            self.m.query("image_inspect", {"ref": ref})
        except NotFound:
            params = {"ref": ref}
            if os.path.exists(self.cfg.registries_conf):
                params["registries_conf"] = self.cfg.registries_conf
            self.m.call("pull", params, timeout=600)

    def _pod_containers(self, sid: str) -> list[tuple[dict, CriMeta]]:
        return [(v, m) for v, m in self._all(CONTAINER) if m.pod == sid]

    @rpc
    def StopPodSandbox(self, request, context):
        view, _ = self._find(SANDBOX, request.pod_sandbox_id)
        for v, _ in self._pod_containers(view["id"]):
            if views.container_state(v) == pb.CONTAINER_RUNNING:
                self._stop(v["id"], STOP_SANDBOX_TIMEOUT)
        self._stop(view["id"], STOP_SANDBOX_TIMEOUT)
        return pb.StopPodSandboxResponse()

    def _stop(self, cid: str, timeout: int) -> None:
        try:
            self.m.call("stop", {"id": cid, "timeout": max(0, timeout)}, timeout=max(0, timeout) + 120)
        except NotFound:
            pass

    def _remove(self, cid: str) -> None:
        try:
            self.m.call("delete", {"id": cid, "force": True}, timeout=120)
        except NotFound:
            pass

    @rpc
    def RemovePodSandbox(self, request, context):
        try:
            view, _ = self._find(SANDBOX, request.pod_sandbox_id)
        except NotFound:
            return pb.RemovePodSandboxResponse()
        for v, _ in self._pod_containers(view["id"]):
            self._remove(v["id"])
        self._remove(view["id"])
        return pb.RemovePodSandboxResponse()

    @rpc
    def PodSandboxStatus(self, request, context):
        view, meta = self._find(SANDBOX, request.pod_sandbox_id)
        info = views.verbose_info(view) if request.verbose else {}
        return pb.PodSandboxStatusResponse(status=views.sandbox_status(view, meta), info=info)

    @rpc
    def ListPodSandbox(self, request, context):
        f = request.filter
        items = []
        for v, meta in self._all(SANDBOX):
            if not id_matches(v["id"], f.id) or not selected(meta.labels, dict(f.label_selector)):
                continue
            if f.HasField("state") and views.sandbox_state(v) != f.state.state:
                continue
            items.append(views.pod_sandbox(v, meta))
        return pb.ListPodSandboxResponse(items=items)

    # --- containers ------------------------------------------------------------------------------------------

    @rpc
    def CreateContainer(self, request, context):
        sandbox, sbmeta = self._find(SANDBOX, request.pod_sandbox_id)
        if views.sandbox_state(sandbox) != pb.SANDBOX_READY:
            raise InvalidState(f"pod sandbox {sandbox['id']} is not ready")
        image = request.config.image.image
        if not image:
            raise specs.InvalidArgument("CreateContainer: config.image.image is empty")
        cid = new_id()
        spec = specs.container_spec(cid, sandbox, sbmeta, request.config)
        if spec.get("log_path"):  # the pod's log directory is made when missing, as containerd makes it
            specs.make_log_dir(spec["log_path"])
        self.m.call("create", {"spec": spec, "start": False}, timeout=300)
        return pb.CreateContainerResponse(container_id=cid)

    @rpc
    def StartContainer(self, request, context):
        view, _ = self._find(CONTAINER, request.container_id)
        self.m.call("start", {"id": view["id"]}, timeout=120)
        return pb.StartContainerResponse()

    @rpc
    def StopContainer(self, request, context):
        view, _ = self._find(CONTAINER, request.container_id)
        self._stop(view["id"], int(request.timeout))
        return pb.StopContainerResponse()

    @rpc
    def RemoveContainer(self, request, context):
        try:
            view, _ = self._find(CONTAINER, request.container_id)
        except NotFound:
            return pb.RemoveContainerResponse()
        self._remove(view["id"])
        return pb.RemoveContainerResponse()

    @rpc
    def ListContainers(self, request, context):
        f = request.filter
        out = []
        for v, meta in self._all(CONTAINER):
            if not id_matches(v["id"], f.id) or not id_matches(meta.pod, f.pod_sandbox_id):
                continue
            if not selected(meta.labels, dict(f.label_selector)):
                continue
            if f.HasField("state") and views.container_state(v) != f.state.state:
                continue
            out.append(views.container(v, meta, self._image_id(v, meta)))
        return pb.ListContainersResponse(containers=out)

    @rpc
    def ContainerStatus(self, request, context):
        view, meta = self._find(CONTAINER, request.container_id)
        view = self.m.query("inspect", {"id": view["id"]})
        info = views.verbose_info(view) if request.verbose else {}
        return pb.ContainerStatusResponse(status=views.container_status(view, meta, self._image_id(view, meta)),
                                          info=info)

    @rpc
    def UpdateContainerResources(self, request, context):
        view, _ = self._find(CONTAINER, request.container_id)
        r = specs.resources(request.linux)
        r.pop("oom_score_adj", None)
        if r:
            self.m.call("update", {"id": view["id"], **r})
        return pb.UpdateContainerResourcesResponse()

    @rpc
    def ReopenContainerLog(self, request, context):
        view, _ = self._find(CONTAINER, request.container_id)
        if view.get("status") != RUNNING:
            raise InvalidState(f"container {view['id']} is not running")
        self.m.call("reopen_log", {"id": view["id"]})
        return pb.ReopenContainerLogResponse()

    @rpc
    def ExecSync(self, request, context):
        view, _ = self._find(CONTAINER, request.container_id)
        code, out, err = exec_sync(self.m, view["id"], list(request.cmd), request.timeout)
        return pb.ExecSyncResponse(stdout=out, stderr=err, exit_code=code)

    def _running(self, cid: str) -> str:
        view, _ = self._find(CONTAINER, cid)
        if views.container_state(view) != pb.CONTAINER_RUNNING:
            raise InvalidState(f"container {view['id']} is not running")
        return view["id"]

    @rpc
    def Exec(self, request, context):
        cid = self._running(request.container_id)
        url = self.streaming.exec_url(ExecRequest(cid, list(request.cmd), request.tty, request.stdin,
                                                  request.stdout, request.stderr))
        return pb.ExecResponse(url=url)

    @rpc
    def Attach(self, request, context):
        cid = self._running(request.container_id)
        url = self.streaming.attach_url(AttachRequest(cid, request.tty, request.stdin, request.stdout,
                                                      request.stderr))
        return pb.AttachResponse(url=url)

    @rpc
    def PortForward(self, request, context):
        view, _ = self._find(SANDBOX, request.pod_sandbox_id)
        return pb.PortForwardResponse(url=self.streaming.portforward_url(
            PortForwardRequest(view["id"], list(request.port))))

    # --- stats -----------------------------------------------------------------------------------------------

    def _stats(self, view: dict, meta: CriMeta) -> pb.ContainerStats:
        raw = None
        if view.get("status") in views.ALIVE:
            try:
                raw = self.m.query("stats", {"id": view["id"]})
            except Exception as e:  # a container that stopped meanwhile has zeros
                log.debug("stats of %s: %s", view["id"], e)
        layer = os.path.join(self._root_dir(), "containers", view["id"], "fs", "upper")
        return views.container_stats(view, meta, raw, layer)

    @rpc
    def ContainerStats(self, request, context):
        view, meta = self._find(CONTAINER, request.container_id)
        return pb.ContainerStatsResponse(stats=self._stats(view, meta))

    @rpc
    def ListContainerStats(self, request, context):
        f = request.filter
        out = [self._stats(v, meta) for v, meta in self._all(CONTAINER)
               if id_matches(v["id"], f.id) and id_matches(meta.pod, f.pod_sandbox_id)
               and selected(meta.labels, dict(f.label_selector))]
        return pb.ListContainerStatsResponse(stats=out)

