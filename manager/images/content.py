"""The content store under <root>/images/, as containerd keeps one: what is listed is whole, what is not is garbage.

    blobs/sha256/<hex>     manifests, configs and compressed layers, each checked against its digest and size
                           before it is renamed here (a mismatch is an error and nothing is kept)
    layers/sha256/<hex>/   one layer unpacked once, named by its diffid (the sha256 of its tar), shared read-only by
                           every image and container that has it; the overlay's lower directories
    index.json             the images (by manifest digest) and tags (normalized reference -> manifest digest),
                           replaced atomically (temp, fsync, rename): the one commit point of a pull or import
    ingest/<tmp>/          work in progress (skopeo's layout, a layer being unpacked); emptied when the store opens
    busybox/rootfs         the built-in image (builtin.py), outside all of this

A crash between a blob's rename and the index's leaves a blob or layer nothing lists: gc() removes whatever no
image and no container's overlay (its metadata's lower) refers to; it runs once after the manager starts serving
(daemon.collect_images, in the background) and after every removal. A layer directory is written under ingest/ and
renamed into layers/ whole, so it never is half there.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field

from shimproto.errors import InvalidArgument, NotFound
from shimproto.fsutil import read_json, write_json
from shimproto.plant import planted

from . import unpack
from .reference import DIGEST, parse

log = logging.getLogger("shimd.manager")
CHUNK = 1 << 20


@dataclass
class Image:
    """One image as the index lists it."""

    digest: str  # the manifest's
    config: str  # the config blob's digest: the image id, as docker names it
    layers: list[str]  # diffids, base first
    blobs: list[str]  # the compressed layers' digests, in the same order
    size: int = 0  # bytes of the unpacked layers
    created: str = ""  # the config's creation time (RFC 3339), as the image says
    added_at: int = 0  # when it came into this store (ns)
    platform: str = ""

    @classmethod
    def from_json(cls, raw: dict) -> Image:
        return cls(**{k: raw[k] for k in cls.__dataclass_fields__ if k in raw})


@dataclass
class Index:
    images: dict[str, Image] = field(default_factory=dict)  # manifest digest -> image
    tags: dict[str, str] = field(default_factory=dict)  # normalized reference -> manifest digest

    def to_json(self) -> dict:
        return {"version": 1, "images": {d: asdict(i) for d, i in self.images.items()}, "tags": self.tags}

    def tags_of(self, digest: str) -> list[str]:
        return sorted(t for t, d in self.tags.items() if d == digest)


def _hex(digest: str) -> str:
    if not DIGEST.fullmatch(digest):
        raise InvalidArgument(f"unsupported digest {digest[:80]!r}: only sha256 is supported")
    return digest.split(":", 1)[1]


def file_digest(path: str) -> tuple[str, int]:
    sha, size = hashlib.sha256(), 0
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            sha.update(chunk)
            size += len(chunk)
    return "sha256:" + sha.hexdigest(), size


def tree_size(path: str) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        total += sum(os.lstat(os.path.join(dirpath, name)).st_size for name in files)
    return total


class ContentStore:
    def __init__(self, root: str) -> None:
        self.dir = os.path.join(root, "images")
        self.blobs = os.path.join(self.dir, "blobs", "sha256")
        self.layers = os.path.join(self.dir, "layers", "sha256")
        self.ingest = os.path.join(self.dir, "ingest")
        self.index_path = os.path.join(self.dir, "index.json")
        for d in (self.dir, self.blobs, self.layers, self.ingest):
            os.makedirs(d, mode=0o700, exist_ok=True)
        for name in os.listdir(self.ingest):  # a pull or import that died: nothing of it is listed
            shutil.rmtree(os.path.join(self.ingest, name), ignore_errors=True)

    # --- the index -----------------------------------------------------------------------------------------------

    def load(self) -> Index:
        try:
            raw = read_json(self.index_path)
        except FileNotFoundError:
            return Index()
        except ValueError as e:
            raise InvalidArgument(f"image index {self.index_path} is corrupt: {e}") from e
        if not isinstance(raw, dict):
            raise InvalidArgument(f"image index {self.index_path} is not a map")
        return Index({d: Image.from_json(i) for d, i in raw.get("images", {}).items()}, dict(raw.get("tags", {})))

    def save(self, index: Index) -> None:
        write_json(self.index_path, index.to_json())

    # --- blobs and layers ----------------------------------------------------------------------------------------

    def blob_path(self, digest: str) -> str:
        return os.path.join(self.blobs, _hex(digest))

    def layer_path(self, diffid: str) -> str:
        return os.path.join(self.layers, _hex(diffid))

    def new_ingest(self, prefix: str) -> str:
        return tempfile.mkdtemp(prefix=prefix, dir=self.ingest)

    def put_blob(self, src: str, digest: str, size: int | None) -> str:
        """Check src against digest (and size when known) and move it into blobs/; nothing is kept on a mismatch.
        A blob already here is kept (content-addressed: it is the same)."""
        dest = self.blob_path(digest)
        if os.path.exists(dest):
            return dest
        got, got_size = file_digest(src)
        if got != digest or size is not None and got_size != size:
            os.unlink(src)
            raise InvalidArgument(f"blob {digest}: content does not match its descriptor (digest {got}, "
                                  f"{got_size} bytes, {size} expected)")
        os.chmod(src, 0o644)
        os.rename(src, dest)
        return dest

    def add_layer(self, blob_digest: str, diffid: str) -> tuple[bool, int]:
        """Unpack the stored blob into layers/<diffid>/ unless it is there; (unpacked now, its size)."""
        dest = self.layer_path(diffid)
        if os.path.isdir(dest):
            return False, tree_size(dest)
        tmp = self.new_ingest("layer-")
        try:
            os.chmod(tmp, 0o755)  # the layer's root: a tar that names "./" sets its own
            got = unpack.unpack(self.blob_path(blob_digest), tmp)
            if got != diffid:
                raise InvalidArgument(f"layer {blob_digest}: its content's digest {got} is not the diffid "
                                      f"{diffid} the image config names")
            size = tree_size(tmp)
            os.rename(tmp, dest)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        log.info("unpacked layer %s (%d bytes)", diffid, size)
        return True, size

    # --- garbage -------------------------------------------------------------------------------------------------

    def gc(self, in_use: set[str]) -> tuple[int, int]:
        """Remove blobs and layers no listed image refers to and no path in in_use (container lowers) is.
        (blobs removed, layers removed)."""
        index = self.load()
        blobs: set[str] = set()
        layers: set[str] = set()
        for img in index.images.values():
            blobs |= {_hex(img.digest), _hex(img.config), *map(_hex, img.blobs)}
            layers |= set(map(_hex, img.layers))
        layers |= {os.path.basename(p) for p in in_use if os.path.dirname(p) == self.layers}
        removed_blobs = removed_layers = 0
        for name in os.listdir(self.blobs):
            if name not in blobs:
                os.unlink(os.path.join(self.blobs, name))
                removed_blobs += 1
        for name in os.listdir(self.layers):
            if name not in layers and not planted("image-gc-keeps-layers"):
                # renamed into ingest first: a crash mid-removal leaves nothing half in layers/
                tmp = self.new_ingest("gone-")
                os.rename(os.path.join(self.layers, name), os.path.join(tmp, name))
                shutil.rmtree(tmp, ignore_errors=True)
                removed_layers += 1
        if removed_blobs or removed_layers:
            log.info("image gc: removed %d blobs and %d layers", removed_blobs, removed_layers)
        return removed_blobs, removed_layers

    def find(self, index: Index, text: str) -> Image:
        """An image by tag (as typed: normalized here), by digest, or by id (config digest, or a prefix of its
        hex of at least 4 characters); NotFound naming it."""
        bare = text.removeprefix("sha256:")
        if len(bare) >= 4 and all(c in "0123456789abcdef" for c in bare):
            hits = [i for i in index.images.values() if _hex(i.config).startswith(bare) or
                    _hex(i.digest).startswith(bare)]
            if len({i.digest for i in hits}) == 1:
                return hits[0]
        try:
            ref = parse(text)
        except InvalidArgument:
            raise NotFound(f"no such image: {text}") from None
        if ref.digest:
            img = index.images.get(ref.digest)
        else:
            img = index.images.get(index.tags.get(str(ref), ""))
        if img is None:
            raise NotFound(f"no such image: {text}")
        return img
