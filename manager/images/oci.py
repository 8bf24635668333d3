"""OCI image layouts in and out of the content store.

In: the layout skopeo wrote under ingest/ (one image: skopeo already chose the platform), read index -> manifest ->
config -> layers; every blob is checked against its descriptor as it moves into blobs/, every layer unpacked once
and checked against the config's diffid. Out: a layout of hard links to stored blobs, for skopeo to push or write
as an archive.
"""

from __future__ import annotations

import json
import os
import time

from shimproto.errors import InvalidArgument

from .content import ContentStore, Image

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
REF_NAME = "org.opencontainers.image.ref.name"


def _json(path: str, what: str) -> dict:
    try:
        with open(path, "rb") as f:
            raw = json.loads(f.read(4 << 20))
    except (OSError, ValueError) as e:
        raise InvalidArgument(f"{what}: cannot read {os.path.basename(path)}: {e}") from e
    if not isinstance(raw, dict):
        raise InvalidArgument(f"{what}: {os.path.basename(path)} is not a JSON object")
    return raw


def _descriptor(d: object, what: str) -> tuple[str, int]:
    if not isinstance(d, dict) or not isinstance(d.get("digest"), str) or not isinstance(d.get("size"), int):
        raise InvalidArgument(f"{what}: malformed descriptor {str(d)[:120]}")
    return d["digest"], d["size"]


def import_layout(store: ContentStore, layout: str, platform: str) -> tuple[Image, list[str]]:
    """Move the layout's one image into the store (blobs checked, layers unpacked once); (image, names the
    layout's index gives it). Blobs and layers it added stay unlisted until the caller writes the index."""
    top = _json(os.path.join(layout, "index.json"), "OCI layout")
    manifests = top.get("manifests")
    if not isinstance(manifests, list) or not manifests:
        raise InvalidArgument("OCI layout: its index lists no image")
    names = sorted({str(m.get("annotations", {}).get(REF_NAME, "")) for m in manifests if isinstance(m, dict)}
                   - {""})

    def local(digest: str, size: int) -> str:
        return store.put_blob(os.path.join(layout, "blobs", *digest.split(":", 1)), digest, size)

    desc = manifests[0]
    digest, size = _descriptor(desc, "OCI layout index")
    if desc.get("mediaType") in (OCI_INDEX, DOCKER_LIST):
        raise InvalidArgument("OCI layout: its index names another index (choose a platform when importing)")
    manifest = _json(local(digest, size), f"manifest {digest}")
    if manifest.get("mediaType", OCI_MANIFEST) not in (OCI_MANIFEST, DOCKER_MANIFEST):
        raise InvalidArgument(f"manifest {digest}: unsupported media type {manifest.get('mediaType')!r}")
    config_digest, config_size = _descriptor(manifest.get("config"), f"manifest {digest}: config")
    config = _json(local(config_digest, config_size), f"image config {config_digest}")
    diffids = config.get("rootfs", {}).get("diff_ids") if isinstance(config.get("rootfs"), dict) else None
    layer_descs = manifest.get("layers") or []
    if not isinstance(diffids, list) or len(diffids) != len(layer_descs):
        raise InvalidArgument(f"image config {config_digest}: rootfs.diff_ids does not match the manifest's "
                              f"{len(layer_descs)} layers")
    blobs = []
    for d in layer_descs:
        blob, blob_size = _descriptor(d, f"manifest {digest}: layer")
        local(blob, blob_size)
        blobs.append(blob)
    total = 0
    for blob, diffid in zip(blobs, diffids, strict=True):
        total += store.add_layer(blob, str(diffid))[1]
    img = Image(digest=digest, config=config_digest, layers=[str(d) for d in diffids], blobs=blobs, size=total,
                created=str(config.get("created", "")), added_at=time.time_ns(), platform=platform)
    return img, names


def config_of(store: ContentStore, img: Image) -> dict:
    """The image's config blob (its `config` map holds Entrypoint, Cmd, Env, ...)."""
    return _json(store.blob_path(img.config), f"image config {img.config}")


def manifest_of(store: ContentStore, img: Image) -> dict:
    return _json(store.blob_path(img.digest), f"manifest {img.digest}")


def write_layout(store: ContentStore, img: Image, dest: str, ref_name: str) -> None:
    """An OCI layout at dest (an empty directory under ingest/) holding img, its blobs hard links to ours."""
    blobs = os.path.join(dest, "blobs", "sha256")
    os.makedirs(blobs)
    for digest in (img.digest, img.config, *img.blobs):
        link = os.path.join(blobs, digest.split(":", 1)[1])
        if not os.path.exists(link):
            os.link(store.blob_path(digest), link)
    manifest_path = store.blob_path(img.digest)
    media = manifest_of(store, img).get("mediaType", OCI_MANIFEST)
    desc = {"mediaType": media, "digest": img.digest, "size": os.path.getsize(manifest_path)}
    if ref_name:
        desc["annotations"] = {REF_NAME: ref_name}
    with open(os.path.join(dest, "oci-layout"), "w") as f:
        json.dump({"imageLayoutVersion": "1.0.0"}, f)
    with open(os.path.join(dest, "index.json"), "w") as f:
        json.dump({"schemaVersion": 2, "manifests": [desc]}, f)
