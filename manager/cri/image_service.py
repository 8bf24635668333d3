"""CRI v1 ImageService over the manager's image commands (pull, images, image_inspect, image_remove, info), with
containerd 1.6's CRI semantics:

- an image is named by a tag, a digest reference or its id (the config digest); a reference without tag or digest
  means :latest. ImageStatus of an image that is not there is no error: the answer has no image.
- PullImage answers the image id. Its credentials become an auth file for that one pull (imageauth.py); the
  [cri] registries_conf (mirrors, plain-HTTP registries) is the pull's, when that file exists.
- RemoveImage removes the image, not one name: every tag goes. An image that is not there is success. An image a
  container still uses loses its tags and leaves CRI's names at once, as containerd's removal of every reference
  does; its content stays for the containers (the manager's forced removal), and the next removal or prune that
  finds it unused collects it.
- ImageFsInfo: the store's directory (<root>/images), what it holds on disk, now.

The front keeps no image state: every answer comes from the manager's store as it is. The one thing remembered is
each image's config by id: an id is the config's digest, so that config can never change."""

from __future__ import annotations

import logging
import os
import shutil
import time
from typing import Any

import grpc

from shimproto.errors import AlreadyExists, DeadlineExceeded, InvalidArgument, NotFound

from . import imageauth, imageviews
from .calls import Manager, rpc
from .config import CriConfig
from .pb import api_pb2, api_pb2_grpc

log = logging.getLogger("shimd.cri")

PULL_TIMEOUT = 3600.0  # seconds a pull may take when the caller set no deadline (kubelet sets none)
WAIT_INTERVAL = 0.2  # seconds between two looks at another pull of the same reference


class ImageService(api_pb2_grpc.ImageServiceServicer):
    def __init__(self, cfg: CriConfig, state: str, manager: Manager) -> None:
        self.cfg = cfg
        self.state = state
        self.manager = manager
        self._configs: dict[str, dict] = {}  # image id -> its config (content-addressed: never stale)
        for name in os.listdir(state) if os.path.isdir(state) else []:
            if name.startswith("cri-auth-"):  # credentials of a pull a killed front was making
                shutil.rmtree(os.path.join(state, name), ignore_errors=True)

    # --- lookups -------------------------------------------------------------------------------------------

    def _inspect(self, ref: str) -> dict | None:
        """The manager's view of the image ref names (tag, digest reference or id), with its config; None when
        there is none."""
        if not ref:
            return None
        try:
            view = self.manager.query("image_inspect", {"ref": ref})
        except NotFound:
            return None
        self._configs[view["id"]] = view.get("config") or {}
        return view

    def _config(self, view: dict) -> dict | None:
        """The config of a listed image; None when it went since it was listed."""
        config = self._configs.get(view["id"])
        if config is None:
            full = self._inspect(view["id"])
            config = (full.get("config") or {}) if full else None
        return config

    # --- the service ---------------------------------------------------------------------------------------

    @rpc
    def ListImages(self, request: api_pb2.ListImagesRequest, context: grpc.ServicerContext) -> Any:
        """Every stored image, or with a filter the one image its spec names (none when it names none).
        containerd 1.6 ignores the filter; the CRI asks for it, and kubelet never sets it."""
        wanted = request.filter.image.image if request.HasField("filter") else ""
        if wanted:
            view = self._inspect(wanted)
            views = [view] if view else []
        else:
            views = self.manager.query("images")
            ids = {v["id"] for v in views}
            for gone in set(self._configs) - ids:  # forget what the store no longer holds
                self._configs.pop(gone, None)
        images = []
        for v in views:
            config = self._config(v)
            if config is not None:
                images.append(imageviews.to_image(v, config))
        return api_pb2.ListImagesResponse(images=images)

    @rpc
    def ImageStatus(self, request: api_pb2.ImageStatusRequest, context: grpc.ServicerContext) -> Any:
        view = self._inspect(request.image.image)
        if view is None:
            return api_pb2.ImageStatusResponse()
        config = view.get("config") or {}
        info = imageviews.status_info(view, config) if request.verbose else {}
        return api_pb2.ImageStatusResponse(image=imageviews.to_image(view, config), info=info)

    @rpc
    def PullImage(self, request: api_pb2.PullImageRequest, context: grpc.ServicerContext) -> Any:
        ref = request.image.image
        if not ref:
            raise InvalidArgument("PullImage: no image given")
        params: dict[str, Any] = {"ref": ref}
        conf = self.cfg.registries_conf
        if conf and os.path.isfile(conf):
            params["registries_conf"] = conf  # else the system's default (none: the registries as named)
        else:
            conf = ""
        auth = request.auth if request.HasField("auth") else None
        with imageauth.auth_file(self.state, auth, ref, conf) as authfile:
            if authfile:
                params["authfile"] = authfile
            view = self._pull(params, context)
        self._configs.pop(view["id"], None)
        log.info("pulled %s as %s", ref, view["id"])
        return api_pb2.PullImageResponse(image_ref=view["id"])

    def _pull(self, params: dict, context: grpc.ServicerContext) -> dict:
        """The manager's pull; while another pull of the same reference is under way (the manager refuses a
        second: kubelet pulls an image once per pod that needs it), wait for that one and take its image."""
        left = context.time_remaining()  # None, or near-infinite (grpcio's "no deadline" from some clients)
        deadline = time.monotonic() + (PULL_TIMEOUT if left is None else min(left, PULL_TIMEOUT))
        while True:
            try:
                return self.manager.call("pull", params, timeout=max(1.0, deadline - time.monotonic()))
            except AlreadyExists:
                pass
            self._wait_transfer(params["ref"], deadline)
            view = self._inspect(params["ref"])
            if view is not None:
                return view
            # the other pull failed: ours goes ahead, and fails (or not) on its own

    def _wait_transfer(self, ref: str, deadline: float) -> None:
        while self.manager.query("transfers", {"ref": ref}):
            if time.monotonic() > deadline:
                raise DeadlineExceeded(f"PullImage {ref}: another pull of it is still under way")
            time.sleep(WAIT_INTERVAL)

    @rpc
    def RemoveImage(self, request: api_pb2.RemoveImageRequest, context: grpc.ServicerContext) -> Any:
        view = self._inspect(request.image.image)
        if view is not None:
            try:
                # by id: every tag goes, not the one named (an id names no tag); forced: see the docstring
                self.manager.call("image_remove", {"ref": view["id"], "force": True})
            except NotFound:
                pass  # removed meanwhile: what was asked is done
            self._configs.pop(view["id"], None)
        return api_pb2.RemoveImageResponse()

    @rpc
    def ImageFsInfo(self, request: api_pb2.ImageFsInfoRequest, context: grpc.ServicerContext) -> Any:
        store = os.path.join(self.manager.query("info")["root"], "images")
        used, inodes = imageviews.store_usage(store)
        usage = api_pb2.FilesystemUsage(timestamp=time.time_ns(),
                                        fs_id=api_pb2.FilesystemIdentifier(mountpoint=store),
                                        used_bytes=api_pb2.UInt64Value(value=used),
                                        inodes_used=api_pb2.UInt64Value(value=inodes))
        return api_pb2.ImageFsInfoResponse(image_filesystems=[usage])
