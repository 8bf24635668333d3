"""The chaos invariants of the image store (the image operations are tests/chaos/imageops.py's), checked after every
round as the container ones are (tests/chaos/invariants.py), from the manager's listing and what is on disk:

- image-store: every listed image is whole: its manifest and config blobs, and each layer's blob, are in blobs/
  and hash to their digests (and sizes), the config is the listed id and names the listed layers, each layer's
  blob unzipped hashes to its diffid and layers/<diffid>/ is there; and nothing else is kept: no blob and no layer
  directory that no listed image (or, for a layer, no container's overlay) refers to, nothing in ingest/ (both
  wait for the collection a starting manager runs in the background: they may trail);
- image-ops: a tag whose import or commit was answered is listed until it is removed, a tag whose removal was
  answered (or whose make failed) is not; a call that failed for no reason the harness gave is recorded by the
  operation itself.

Blobs never change once stored, so each is hashed once per session (by inode, size and mtime).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from shimproto.client import Client

if TYPE_CHECKING:
    from tests.chaos.harness import Chaos

IMAGE_STORE = "image-store"
IMAGE_OPS = "image-ops"
_hashed: dict[tuple[str, int, int, int, bool], str] = {}  # (path, inode, size, mtime, unzipped) -> sha256 digest


@dataclass
class ImageView:
    listing: dict[str, dict]  # manifest digest -> the manager's view of it
    tags: set[str]  # every listed tag (familiar)
    blobs: set[str]  # hex names in blobs/sha256
    layers: set[str]  # hex names in layers/sha256
    ingest: list[str]
    lowers: set[str]  # every container's overlay lower dirs, from its metadata on disk


def take(ch: Chaos, c: Client) -> ImageView:
    listing = {x["digest"]: x for x in c.call("images", {})}  # type: ignore[union-attr]
    d = os.path.join(ch.env.root, "images")
    lowers: set[str] = set()
    for id in ch.env.container_ids_on_disk():
        try:
            with open(os.path.join(ch.env.root, "containers", id, "meta.json")) as f:
                lowers.update(json.load(f).get("lower", "").split(":"))
        except (OSError, ValueError):
            pass

    def names(*parts: str) -> list[str]:
        try:
            return sorted(os.listdir(os.path.join(d, *parts)))
        except FileNotFoundError:
            return []

    return ImageView(listing, {t for x in listing.values() for t in x["tags"]}, set(names("blobs", "sha256")),
                     set(names("layers", "sha256")), names("ingest"), lowers - {""})


def _digest(path: str, unzipped: bool = False) -> tuple[str, int]:
    """sha256 digest and size of the file (of its gunzip'd content with unzipped); ("", 0) when it is missing."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return "", 0
    key = (path, st.st_ino, st.st_size, st.st_mtime_ns, unzipped)
    if key not in _hashed:
        sha = hashlib.sha256()
        with (gzip.open if unzipped else open)(path, "rb") as f:  # type: ignore[operator]
            while chunk := f.read(1 << 20):
                sha.update(chunk)
        _hashed[key] = "sha256:" + sha.hexdigest()
    return _hashed[key], st.st_size


def _blob(ch: Chaos, v: ImageView, owner: str, digest: str, size: int | None) -> str:
    """The blob's path once it checks out; "" (and a finding) when it does not."""
    path = os.path.join(ch.env.root, "images", "blobs", "sha256", digest.split(":", 1)[-1])
    got, got_size = _digest(path)
    if not got:
        ch.violation(f"{IMAGE_STORE}: {owner}: listed, but its blob {digest} is missing")
    elif got != digest or size is not None and got_size != size:
        ch.violation(f"{IMAGE_STORE}: {owner}: blob {digest} holds {got} ({got_size} bytes, {size} expected)")
    else:
        return path
    return ""


def listed_images_are_whole(ch: Chaos, v: ImageView) -> None:
    for digest, x in v.listing.items():
        owner = f"image {digest[:19]} ({', '.join(x['tags']) or 'untagged'})"
        path = _blob(ch, v, owner, digest, None)
        if not path:
            continue
        with open(path) as f:
            manifest = json.load(f)
        config = manifest["config"]
        if config["digest"] != x["id"]:
            ch.violation(f"{IMAGE_STORE}: {owner}: its manifest's config is {config['digest']}, listed {x['id']}")
        path = _blob(ch, v, owner, config["digest"], config["size"])
        if not path:
            continue
        with open(path) as f:
            diffids = json.load(f)["rootfs"]["diff_ids"]
        if diffids != x["layers"] or len(diffids) != len(manifest["layers"]):
            ch.violation(f"{IMAGE_STORE}: {owner}: its config's layers {diffids} are not the listed "
                         f"{x['layers']} or not its manifest's {len(manifest['layers'])}")
            continue
        for desc, diffid in zip(manifest["layers"], diffids, strict=True):
            path = _blob(ch, v, owner, desc["digest"], desc["size"])
            if path and _digest(path, unzipped=True)[0] != diffid:
                ch.violation(f"{IMAGE_STORE}: {owner}: layer blob {desc['digest']} unzipped is not {diffid}")
            if not os.path.isdir(os.path.join(ch.env.root, "images", "layers", "sha256", diffid.split(":")[1])):
                ch.violation(f"{IMAGE_STORE}: {owner}: listed, but its layer directory {diffid} is missing")
        ch.count(IMAGE_STORE)


def nothing_unreferenced_is_kept(ch: Chaos, v: ImageView, unsettled: list[str]) -> None:
    blobs: set[str] = set()
    layers = {os.path.basename(p) for p in v.lowers}
    for digest, x in v.listing.items():
        layers |= {d.split(":")[1] for d in x["layers"]}
        blobs |= {digest.split(":")[1], x["id"].split(":")[1]}
        try:
            with open(os.path.join(ch.env.root, "images", "blobs", "sha256", digest.split(":")[1])) as f:
                blobs |= {d["digest"].split(":")[1] for d in json.load(f)["layers"]}
        except (OSError, ValueError):
            pass  # (listed_images_are_whole says so)
    unsettled += [f"{IMAGE_STORE}: blob {b} is kept, but no listed image refers to it" for b in v.blobs - blobs]
    unsettled += [f"{IMAGE_STORE}: layer {b} is kept, but no listed image or container refers to it"
                  for b in v.layers - layers]
    unsettled += [f"{IMAGE_STORE}: ingest/{n} is left, with no operation under way" for n in v.ingest]
    ch.count(IMAGE_STORE, len(v.blobs) + len(v.layers))


def answered_tags_are_listed(ch: Chaos, v: ImageView) -> None:
    for img in ch.images.values():
        listed = img.tag in v.tags
        if img.made == "yes" and img.removed == "no" and not listed:
            ch.violation(f"{IMAGE_OPS}: {img.tag}: made and never removed, but not listed")
        if listed and img.removed == "yes":
            ch.violation(f"{IMAGE_OPS}: {img.tag}: removed, but still listed")
        if listed and img.made == "failed":
            ch.violation(f"{IMAGE_OPS}: {img.tag}: its make failed, but it is listed")
        ch.count(IMAGE_OPS)


def check(ch: Chaos, c: Client, unsettled: list[str]) -> None:
    """Every image invariant on one view; what may trail (the collection at start) goes to unsettled."""
    if not ch.archive:
        return
    v = take(ch, c)
    listed_images_are_whole(ch, v)
    nothing_unreferenced_is_kept(ch, v, unsettled)
    answered_tags_are_listed(ch, v)
    ch.last_images = v


def learn(ch: Chaos) -> None:
    """What the last view settles about each tag whose answer was lost."""
    v = ch.last_images
    if v is None:
        return
    for img in ch.images.values():
        listed = img.tag in v.tags
        if img.made == "maybe":
            img.made = "yes" if listed else "failed"
        if img.removed == "maybe":
            img.removed = "no" if listed else "yes"
