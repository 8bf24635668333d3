"""Container metadata on disk: <root>/containers/<id>/meta.json, written atomically.

Layout the manager owns under --root:
    containers/<id>/meta.json      what was asked for (image, command, options, created_at)
    containers/<id>/container.log  the container's CRI log (written by the shim)
    containers/<id>/fs/{upper,work} the container's writable layer (mounted by the shim, removed by us after it)
and under --state: shims/<id>/ (the shim's own directory), runc/ (the runtime's state root) and intents/<id>
("create" or "delete" and the client's request key, or "commit" and its attempt's key while a commit holds the
container paused; kept in --state so that a full --root never blocks a delete) and requests/<key> (the outcome of a
delete, for a repeat of that call).
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass, fields

from shimproto.errors import ShimdError
from shimproto.fsutil import atomic_write, read_json, write_json
from shimproto.model import ID_RE
from shimproto.spec import ContainerSpec

log = logging.getLogger("shimd.manager")


@dataclass
class Meta:
    """What was asked for (the spec, its id filled in), what it resolved to, and when."""

    spec: ContainerSpec
    lower: str  # the read-only trees under the overlay, top first, ':'-joined: the image's layers or --rootfs
    created_at: int = 0
    request_key: str = ""  # the client's key of the create call, so a repeat of it is recognised
    image_digest: str = ""  # the manifest digest of the stored image it runs ("" : built-in or --rootfs)
    cgroup: str = ""  # its cgroup path under each hierarchy ("" : /shimd/ID, before managers had their own)
    damaged: str = ""  # why its meta.json could not be read (never written: the file is left as it was found)

    @property
    def id(self) -> str:
        return self.spec.id

    @property
    def cgroup_path(self) -> str:
        """Its cgroup under each hierarchy: as recorded, or /shimd/ID for a container made before managers had a
        cgroup parent of their own."""
        return self.cgroup or f"/shimd/{self.id}"

    def to_json(self) -> dict:
        return {"spec": self.spec.to_wire(), "lower": self.lower, "created_at": self.created_at,
                "request_key": self.request_key, "image_digest": self.image_digest, "cgroup": self.cgroup}

    @classmethod
    def from_json(cls, raw: object) -> Meta:
        if not isinstance(raw, dict):
            raise ValueError("not a map")
        if "spec" not in raw:  # written by a manager before the spec existed: the spec's fields were flat
            known = {f.name for f in fields(ContainerSpec)}
            flat = {k: v for k, v in raw.items() if k in known}
            if not flat.get("image"):
                flat["rootfs"] = raw.get("lower", "")
            raw = {**raw, "spec": flat}
        spec = ContainerSpec.from_wire(raw["spec"], "meta.json")
        return cls(spec=spec, lower=str(raw["lower"]), created_at=int(raw.get("created_at", 0)),
                   request_key=str(raw.get("request_key", "")), image_digest=str(raw.get("image_digest", "")),
                   cgroup=str(raw.get("cgroup", "")))

    @classmethod
    def placeholder(cls, id: str, damaged: str = "") -> Meta:
        """For a create intent with no metadata (enough to roll it back), or a container whose meta.json cannot be
        read (enough to list it, reattach its shim, inspect and remove it)."""
        return cls(spec=ContainerSpec(args=[], id=id), lower="", damaged=damaged)


OUTCOMES_KEPT = 1000


def _mtime(path: str) -> float:
    try:
        return os.stat(path).st_mtime
    except FileNotFoundError:
        return 0.0


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


class Store:
    def __init__(self, root: str, state: str) -> None:
        self.root = root
        self.state = state
        self.containers = os.path.join(root, "containers")
        self.shims = os.path.join(state, "shims")
        self.runc_root = os.path.join(state, "runc")
        self.intents = os.path.join(state, "intents")
        self.requests = os.path.join(state, "requests")
        # root and state: 0711, so a socket_group member reaches the API socket (named, not listed); what is
        # under them is root's alone (docs/architecture.md, "Threat model")
        for d, mode in ((root, 0o711), (state, 0o711), (self.containers, 0o700), (self.shims, 0o700),
                        (self.runc_root, 0o700), (self.intents, 0o700), (self.requests, 0o700)):
            os.makedirs(d, mode=mode, exist_ok=True)
            os.chmod(d, mode)  # also a tree made by an older manager

    def dir(self, id: str) -> str:
        return os.path.join(self.containers, id)

    def shim_dir(self, id: str) -> str:
        return os.path.join(self.shims, id)

    def log_path(self, id: str) -> str:
        return os.path.join(self.dir(id), "container.log")

    def fs(self, id: str) -> tuple[str, str]:
        return os.path.join(self.dir(id), "fs", "upper"), os.path.join(self.dir(id), "fs", "work")

    def intent(self, id: str) -> tuple[str, str]:
        """(kind, key) of the create, delete or commit under way for id; ("", "") when none."""
        try:
            with open(os.path.join(self.intents, id)) as f:
                kind, _, key = f.read().strip().partition(" ")
                return kind, key
        except FileNotFoundError:
            return "", ""

    def set_intent(self, id: str, kind: str, key: str = "") -> None:
        atomic_write(os.path.join(self.intents, id), f"{kind} {key}".strip().encode())

    def clear_intent(self, id: str) -> None:
        try:
            os.unlink(os.path.join(self.intents, id))
        except FileNotFoundError:
            pass

    # --- outcomes of calls that remove what they acted on (a repeat of them finds the answer here) ----------------

    def save_outcome(self, key: str, outcome: dict) -> None:
        names = os.listdir(self.requests)
        if len(names) >= OUTCOMES_KEPT:  # keep the newest: a repeat comes within seconds of its first call
            names.sort(key=lambda n: _mtime(os.path.join(self.requests, n)))
            for name in names[:len(names) - OUTCOMES_KEPT + 1]:
                _unlink(os.path.join(self.requests, name))
        write_json(os.path.join(self.requests, key), outcome)

    def outcome(self, key: str) -> dict | None:
        try:
            raw = read_json(os.path.join(self.requests, key))
        except (OSError, ValueError):
            return None
        return raw if isinstance(raw, dict) else None

    def intent_ids(self) -> list[str]:
        return sorted(n for n in os.listdir(self.intents) if ID_RE.fullmatch(n))

    def save(self, meta: Meta) -> None:
        os.makedirs(self.dir(meta.id), mode=0o700, exist_ok=True)  # the log, the writable layer: root's alone
        write_json(os.path.join(self.dir(meta.id), "meta.json"), meta.to_json())

    def load_all(self) -> list[Meta]:
        out = []
        for name in sorted(os.listdir(self.containers)):
            if not ID_RE.fullmatch(name):
                continue
            path = os.path.join(self.containers, name, "meta.json")
            try:
                meta = Meta.from_json(read_json(path))
                meta.spec.id = name  # the directory names the container, never the file's content
                out.append(meta)
            except FileNotFoundError:
                if self._made_nothing(name):  # a create that died before its metadata: nothing else was made
                    shutil.rmtree(os.path.join(self.containers, name), ignore_errors=True)
                    continue
                out.append(self._damaged(name, path, "no such file, but the container's other files are there"))
            except (OSError, ValueError, TypeError, AttributeError, KeyError, ShimdError) as e:
                out.append(self._damaged(name, path, getattr(e, "message", "") or str(e) or type(e).__name__))
        return out

    def _made_nothing(self, id: str) -> bool:
        """Holds id's directory nothing but a half-written meta.json (a create killed before its metadata)?"""
        return all(n.startswith("meta.json.tmp") for n in os.listdir(self.dir(id)))

    @staticmethod
    def _damaged(id: str, path: str, why: str) -> Meta:
        """A container whose metadata cannot be read stays a container: listed, reattached, removable. One line."""
        why = " ".join(why.split())[:200]
        log.warning("[%s] %s cannot be read (%s): listed with what its shim says; inspect and rm -f work", id, path,
                    why)
        return Meta.placeholder(id, damaged=f"{path}: {why}")

    def images_in_use(self) -> tuple[set[str], dict[str, list[str]]]:
        """(lower directories, image digest -> container ids) of every container with metadata on disk, listed or
        not: what the image store must keep. Read leniently: a file this cannot read keeps nothing."""
        lowers: set[str] = set()
        digests: dict[str, list[str]] = {}
        for name in os.listdir(self.containers):
            try:
                raw = read_json(os.path.join(self.containers, name, "meta.json"))
            except (OSError, ValueError):
                raw = None
            if not isinstance(raw, dict) and not self._made_nothing(name):
                # whose layers it runs on is unknown: keep every layer there is while it exists
                layers = os.path.join(self.root, "images", "layers", "sha256")
                lowers.update(os.path.join(layers, n) for n in (os.listdir(layers) if os.path.isdir(layers) else ()))
            if isinstance(raw, dict):
                lowers.update(str(raw.get("lower", "")).split(":"))
                if raw.get("image_digest"):
                    digests.setdefault(str(raw["image_digest"]), []).append(name)
        return lowers - {""}, digests

    def remove(self, id: str) -> None:
        self.remove_data(id)
        self.remove_meta(id)

    def remove_data(self, id: str) -> None:
        """Everything kept for id but its metadata, which goes last (remove_meta) so a crash leaves it findable."""
        shutil.rmtree(self.shim_dir(id), ignore_errors=True)
        d = self.dir(id)
        if os.path.isdir(d):
            for name in os.listdir(d):
                if name != "meta.json":
                    p = os.path.join(d, name)
                    shutil.rmtree(p, ignore_errors=True) if os.path.isdir(p) else os.unlink(p)

    def remove_meta(self, id: str) -> None:
        shutil.rmtree(self.dir(id), ignore_errors=True)
        self.clear_intent(id)
