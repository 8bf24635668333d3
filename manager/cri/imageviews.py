"""The manager's image views as CRI sees them: the Image message, the verbose status info, and how much the image
store holds on disk (ImageFsInfo). Pure functions of the views the manager answers with (`images`,
`image_inspect`) and of the files under the store: no manager call happens here.

Names: the manager keeps every tag normalized (`registry.k8s.io/pause:3.6`, `docker.io/library/redis:7`), which is
what kubelet compares with the reference it pulled; a repo digest is each tagged repository at the manifest's digest,
as containerd lists them (an image pulled only by digest has no tag, so the store knows no repository of it and
lists no repo digest either)."""

from __future__ import annotations

import hashlib
import json
import os
import re

from manager.images import reference
from shimproto.errors import InvalidArgument

from .pb import api_pb2

NUMERIC = re.compile(r"[+-]?[0-9]+")


def user_of(config: dict) -> tuple[int | None, str]:
    """(uid, "") when the image's User is numeric ("1003:1004" -> 1003), (None, name) when it is a name
    ("www-data:1004" -> "www-data"), (None, "") when it names none. kubelet reads these for runAsNonRoot: a
    name it cannot check refuses such a pod, a uid it can."""
    user = ((config.get("config") or {}).get("User") or "").split(":", 1)[0]
    if not user:
        return None, ""
    if not NUMERIC.fullmatch(user) or not -(1 << 63) <= int(user) < 1 << 63:
        return None, user  # not an int64 as Go's ParseInt reads one: a name, as containerd takes it
    return int(user), ""


def chain_id(diff_ids: list[str]) -> str:
    """The OCI chain id of the layers (base first): the identity containerd gives an image's top snapshot, shown
    in the verbose status as containerd shows it."""
    chain = ""
    for d in diff_ids:
        chain = d if not chain else "sha256:" + hashlib.sha256(f"{chain} {d}".encode()).hexdigest()
    return chain


def repo_names(view: dict) -> tuple[list[str], list[str]]:
    """(repo tags, repo digests) of a manager image view."""
    tags = list(view.get("repo_tags") or [])
    digests: list[str] = []
    for t in tags:
        try:
            name = reference.parse(t).name
        except InvalidArgument:
            continue  # the store holds only parsed names; a foreign one is left out, not fatal
        rd = f"{name}@{view['digest']}"
        if rd not in digests:
            digests.append(rd)
    return tags, digests


def to_image(view: dict, config: dict) -> api_pb2.Image:
    tags, digests = repo_names(view)
    uid, username = user_of(config)
    img = api_pb2.Image(id=view["id"], repo_tags=tags, repo_digests=digests, size=max(0, int(view.get("size", 0))),
                        username=username, spec=api_pb2.ImageSpec(image=view["id"]), pinned=False)
    if uid is not None:
        img.uid.value = uid
    return img


def status_info(view: dict, config: dict) -> dict[str, str]:
    """ImageStatus's verbose info, the keys containerd gives: the chain id and the image's config (imageSpec)."""
    rootfs = config.get("rootfs") or {}
    ids = rootfs.get("diff_ids") or view.get("layers") or []
    return {"info": json.dumps({"chainID": chain_id(list(ids)), "imageSpec": config})}


def store_usage(path: str, skip: tuple[str, ...] = ("ingest",)) -> tuple[int, int]:
    """(bytes, inodes) the tree at path takes, as du counts them: allocated blocks, each inode once however many
    hard links it has (layers share nothing by link, but busybox trees are all links). The top-level names in
    skip are left out: work in progress is not what the store holds. A file that goes while we walk (a
    collection) is skipped; the next call counts again."""
    seen: set[tuple[int, int]] = set()
    used = 0
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return 0, 0
    seen.add((st.st_dev, st.st_ino))
    used += st.st_blocks * 512
    for dirpath, dirs, files in os.walk(path):
        if dirpath == path:
            dirs[:] = [d for d in dirs if d not in skip]
        for name in dirs + files:
            try:
                st = os.lstat(os.path.join(dirpath, name))
            except FileNotFoundError:
                continue
            key = (st.st_dev, st.st_ino)
            if key not in seen:
                seen.add(key)
                used += st.st_blocks * 512
    return used, len(seen)
