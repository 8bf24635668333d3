"""docker commit: a container's writable layer (its overlay upper directory, read on disk) made a new image layer on
top of its image, stored through the content store like any pulled image.

The layer is written once as a gzip'd tar under ingest/, its compressed digest (the blob) and its uncompressed one
(the diffid) computed while it is written; then, under the store's lock: the blob is checked and moved into
blobs/, unpacked by the same code a pull uses (which checks the diffid again), the config (the base image's, with
rootfs.diff_ids and history extended) and an OCI manifest (the base's layers plus the new one) are stored as blobs,
and last the index is written: the commit point, as for a pull. A container of the built-in busybox or of a
--rootfs tree has no stored base: its lower trees become one base layer first.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import time
from dataclasses import dataclass
from typing import BinaryIO

from runtime.skopeo import host_arch

from . import oci, rootfs
from .content import ContentStore, Image

DOCKER_TO_OCI = {
    "application/vnd.docker.image.rootfs.diff.tar.gzip": "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip":
        "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
}
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"


class _Hashing:
    """A write-only stream that hashes and counts what passes to the next one."""

    def __init__(self, out: BinaryIO) -> None:
        self.out, self.sha, self.size = out, hashlib.sha256(), 0

    def write(self, data: bytes) -> int:
        self.sha.update(data)
        self.size += len(data)
        return self.out.write(data)

    def flush(self) -> None:
        self.out.flush()

    @property
    def digest(self) -> str:
        return "sha256:" + self.sha.hexdigest()


@dataclass
class Layer:
    path: str  # the gzip'd tar under ingest/
    digest: str
    size: int
    diffid: str


def write_layer(entries: rootfs.Entries, path: str) -> Layer:
    """The entries as a gzip'd tar at path (a new file), with its digests."""
    with open(path, "xb") as f:
        compressed = _Hashing(f)
        with gzip.GzipFile(fileobj=compressed, mode="wb", mtime=0, compresslevel=6) as gz:  # type: ignore[arg-type]
            plain = _Hashing(gz)  # type: ignore[arg-type]
            rootfs.write(entries, plain)  # type: ignore[arg-type]
        f.flush()
        os.fsync(f.fileno())
    return Layer(path, compressed.digest, compressed.size, plain.digest)


@dataclass
class Base:
    """What the new image stands on: a stored image, or nothing (then `config` is the one to start from)."""

    image: Image | None
    config: dict


def _put_json(store: ContentStore, tmpdir: str, obj: dict) -> tuple[str, int]:
    data = json.dumps(obj, separators=(",", ":"), sort_keys=True).encode()
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    tmp = os.path.join(tmpdir, digest.split(":", 1)[1])
    with open(tmp, "wb") as f:
        f.write(data)
    store.put_blob(tmp, digest, len(data))
    return digest, len(data)


def store_image(store: ContentStore, tmpdir: str, base: Base, layers: list[Layer], comment: str,
                author: str) -> Image:
    """Store layers (their blobs and unpacked dirs), then a config and manifest over base's; the image (not yet
    in the index: the caller writes it, holding the store's lock)."""
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    config = json.loads(json.dumps(base.config))  # a deep copy
    config.setdefault("architecture", host_arch())
    config.setdefault("os", "linux")
    config["created"] = now
    if author:
        config["author"] = author
    fs = config.setdefault("rootfs", {"type": "layers", "diff_ids": []})
    history = config.setdefault("history", [])
    descriptors: list[dict] = []
    if base.image is not None:
        manifest = oci.manifest_of(store, base.image)
        for d in manifest.get("layers") or []:
            descriptors.append({**d, "mediaType": DOCKER_TO_OCI.get(d.get("mediaType", ""),
                                                                   d.get("mediaType", OCI_LAYER))})
    sizes = base.image.size if base.image is not None else 0
    for layer in layers:
        store.put_blob(layer.path, layer.digest, layer.size)
        sizes += store.add_layer(layer.digest, layer.diffid)[1]
        fs["diff_ids"].append(layer.diffid)
        descriptors.append({"mediaType": OCI_LAYER, "digest": layer.digest, "size": layer.size})
        history.append({"created": now, "created_by": "shimctl commit", **({"comment": comment} if comment else {}),
                        **({"author": author} if author else {})})
    config_digest, config_size = _put_json(store, tmpdir, config)
    manifest_digest, _ = _put_json(store, tmpdir, {
        "schemaVersion": 2, "mediaType": oci.OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": config_size},
        "layers": descriptors})
    return Image(digest=manifest_digest, config=config_digest, layers=list(fs["diff_ids"]),
                 blobs=[d["digest"] for d in descriptors], size=sizes, created=now, added_at=time.time_ns(),
                 platform=f"{config['os']}/{config['architecture']}")
