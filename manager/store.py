"""Container metadata on disk: <root>/containers/<id>/meta.json, written atomically.

Layout the manager owns under --root:
    containers/<id>/meta.json      what was asked for (image, command, options, created_at)
    containers/<id>/container.log  the container's CRI log (written by the shim)
    containers/<id>/fs/{upper,work} the container's writable layer (mounted by the shim, removed by us after it)
and under --state: shims/<id>/ (the shim's own directory), runc/ (the runtime's state root) and intents/<id>
("create" or "delete" while one is under way; kept in --state so that a full --root never blocks a delete).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import asdict, dataclass, field

from shimproto.fsutil import atomic_write, read_json, write_json
from shimproto.model import ID_RE


@dataclass
class Meta:
    id: str
    args: list[str]
    lower: str
    image: str = ""
    env: list[str] = field(default_factory=list)
    cwd: str = "/"
    created_at: int = 0
    auto_remove: bool = False
    memory_limit: int | None = None
    pids_limit: int | None = None
    tty: bool = False
    stdin: bool = False
    log_max_size: int = 0
    log_max_files: int = 5


class Store:
    def __init__(self, root: str, state: str) -> None:
        self.root = root
        self.state = state
        self.containers = os.path.join(root, "containers")
        self.shims = os.path.join(state, "shims")
        self.runc_root = os.path.join(state, "runc")
        self.intents = os.path.join(state, "intents")
        for d in (root, state, self.containers, self.shims, self.runc_root, self.intents):
            os.makedirs(d, mode=0o711, exist_ok=True)
            os.chmod(d, 0o711)  # never world-writable

    def dir(self, id: str) -> str:
        return os.path.join(self.containers, id)

    def shim_dir(self, id: str) -> str:
        return os.path.join(self.shims, id)

    def log_path(self, id: str) -> str:
        return os.path.join(self.dir(id), "container.log")

    def fs(self, id: str) -> tuple[str, str]:
        return os.path.join(self.dir(id), "fs", "upper"), os.path.join(self.dir(id), "fs", "work")

    def intent(self, id: str) -> str:
        try:
            with open(os.path.join(self.intents, id)) as f:
                return f.read().strip()
        except FileNotFoundError:
            return ""

    def set_intent(self, id: str, kind: str) -> None:
        atomic_write(os.path.join(self.intents, id), kind.encode())

    def clear_intent(self, id: str) -> None:
        try:
            os.unlink(os.path.join(self.intents, id))
        except FileNotFoundError:
            pass

    def intent_ids(self) -> list[str]:
        return sorted(n for n in os.listdir(self.intents) if ID_RE.fullmatch(n))

    def save(self, meta: Meta) -> None:
        os.makedirs(self.dir(meta.id), mode=0o711, exist_ok=True)
        write_json(os.path.join(self.dir(meta.id), "meta.json"), asdict(meta))

    def load_all(self) -> list[Meta]:
        out = []
        for name in sorted(os.listdir(self.containers)):
            if not ID_RE.fullmatch(name):
                continue
            try:
                raw = read_json(os.path.join(self.containers, name, "meta.json"))
                known = {k: v for k, v in raw.items() if k in Meta.__dataclass_fields__}  # type: ignore[union-attr]
                out.append(Meta(**known))
            except FileNotFoundError:  # a create that died before its metadata: nothing else was made
                shutil.rmtree(os.path.join(self.containers, name), ignore_errors=True)
            except (ValueError, TypeError, AttributeError):
                continue
        return out

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
