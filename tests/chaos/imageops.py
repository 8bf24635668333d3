"""The chaos workload's image operations (mixed into the harness like tests/chaos/ops.py's): an import of a small
archive made once per session, `image rm`, and commit of a running container, each while the manager may be
SIGKILLed under it. Its call, sent again to the next manager, must then succeed: an import always (but when the same
archive is being imported by another operation at that moment), a removal unless the image is gone already (a
removal repeated after it took effect finds nothing: that counts as removed), a commit unless its container was
taken or the runtime was told to fail. Each import and commit makes a tag of its own, so a tag's life is one make
and at most one removal (an import's image is removed with its last tag, a commit's with its only one); what each
answered is remembered per tag, for the image-ops invariant (tests/chaos/image_invariants.py)."""

from __future__ import annotations

import os
import shutil
import threading
from dataclasses import dataclass
from random import Random

from shimproto.client import Client
from shimproto.errors import AlreadyExists, DeadlineExceeded, InvalidArgument, NotFound, ShimdError, Unavailable
from tests import imagekit
from tests.chaos.ops import Box, Stats

MAX_TAGS = 8  # tags kept; past this, imports and commits give way to removals


@dataclass
class Img:
    """What the harness knows of one tag."""

    tag: str
    made: str = "maybe"  # yes, maybe (the answer was lost), failed
    removed: str = "no"  # no, maybe, yes


def build_archive(work: str) -> str:
    """A small OCI archive (busybox plus a layer deleting a file) built with umoci and skopeo: no registry."""
    lay = imagekit.Layout(work)
    lay.layer("base", imagekit.busybox_tree)
    lay.layer("del", imagekit.delete_a_file)
    path = os.path.join(work, "chaos-img.tar")
    imagekit.run("skopeo", "copy", f"oci:{lay.dir}:del", f"oci-archive:{path}:del")
    shutil.rmtree(lay.dir)
    return path


class ImageOps:
    """Mixed into Chaos: the image operations, each safe to run in a thread."""

    archive: str  # "" : no image operations
    images: dict[str, Img]
    image_ops_active: int
    rng: Random
    lock: threading.Lock
    stats: Stats
    n: int

    def client(self) -> Client:
        raise NotImplementedError

    def violation(self, what: str) -> None:
        raise NotImplementedError

    def _pick(self, kinds: tuple[str, ...] = ("counter", "exiter", "trapper")) -> Box | None:
        raise NotImplementedError

    def _image_call(self, method: str, params: dict) -> tuple[object, ShimdError | None]:
        with self.lock:
            self.image_ops_active += 1
        c = self.client()
        try:
            return c.call(method, params, timeout=60), None
        except ShimdError as e:
            return None, e
        finally:
            c.close()
            with self.lock:
                self.image_ops_active -= 1

    def image_choices(self) -> list:
        if not self.archive:
            return []
        with self.lock:
            full = sum(i.made != "failed" and i.removed != "yes" for i in self.images.values()) >= MAX_TAGS
        return [self.op_rmi, self.op_rmi, self.op_rmi] if full else [self.op_import, self.op_rmi, self.op_commit]

    def _new_tag(self, kind: str) -> Img:
        with self.lock:
            self.n += 1
            img = self.images[f"chaos/{kind}:{self.n}"] = Img(f"chaos/{kind}:{self.n}")
            if kind == "import":
                self.stats.image_imports += 1
            else:
                self.stats.image_commits += 1
        return img

    def op_import(self, strict: bool = False) -> Img:
        img = self._new_tag("import")
        _, err = self._image_call("image_import", {"path": self.archive, "tag": img.tag})
        if err is None:
            img.made = "yes"
        elif isinstance(err, AlreadyExists) and not strict:  # the same archive, imported by another operation
            img.made = "failed"
        elif not isinstance(err, (Unavailable, DeadlineExceeded)) or strict:
            img.made = "failed"
            self.violation(f"image-ops: import of {self.archive} as {img.tag} failed: {type(err).__name__}: {err}")
        return img

    def op_rmi(self, img: Img | None = None) -> None:
        with self.lock:
            live = [i for i in self.images.values() if i.made == "yes" and i.removed == "no"]
            img = img or (self.rng.choice(live) if live else None)
            if img is None:
                return
            img.removed = "maybe"
            self.stats.image_removals += 1
        _, err = self._image_call("image_remove", {"ref": img.tag})
        if err is None or isinstance(err, NotFound):  # NotFound: removed by the first call, or by another
            img.removed = "yes"
        elif not isinstance(err, (Unavailable, DeadlineExceeded)):
            self.violation(f"image-ops: rmi {img.tag} failed: {type(err).__name__}: {err}")

    def op_commit(self, box: Box | None = None, strict: bool = False) -> Img | None:
        box = box or self._pick()
        if box is None:
            return None
        img = self._new_tag("commit")
        _, err = self._image_call("commit", {"id": box.id, "ref": img.tag})
        if err is None:
            img.made = "yes"
        elif isinstance(err, (Unavailable, DeadlineExceeded)) and not strict:
            pass  # no answer came (its container's shim was killed, or the runtime hung): made or not
        else:
            img.made = "failed"
            # its container removed, stopped, or its shim killed meanwhile; the runtime told to fail its pause
            if strict or isinstance(err, InvalidArgument):
                self.violation(f"image-ops: commit of {box.id} as {img.tag} failed: {type(err).__name__}: {err}")
        return img
