"""Named volumes: <root>/volumes/<name>/_data (what containers see) and volume.json beside it. A volume is made by
`volume create` or on first use by a container; it outlives every container that used it and is removed only by
`volume rm`, which is refused while a container (any status) uses it. The data is never touched by the manager:
the shim copies the image's content in on first use (shimd/mounts.py) and runc bind-mounts it."""

from __future__ import annotations

import os
import shutil
import time

from shimproto.errors import AlreadyExists, InvalidState, NotFound
from shimproto.fsutil import read_json, write_json
from shimproto.plans import check_name

META = "volume.json"
DATA = "_data"


class Volumes:
    def __init__(self, root: str) -> None:
        self.dir = os.path.join(root, "volumes")
        os.makedirs(self.dir, mode=0o700, exist_ok=True)
        os.chmod(self.dir, 0o700)  # root's alone: runc and the CNI plugins run as root

    def data(self, name: str) -> str:
        return os.path.join(self.dir, name, DATA)

    def create(self, name: str, exist_ok: bool = False) -> dict:
        check_name(name, "volume")
        d = os.path.join(self.dir, name)
        if os.path.exists(os.path.join(d, META)):
            if exist_ok:
                return self.inspect(name)
            raise AlreadyExists(f"volume {name} already exists")
        os.makedirs(os.path.join(d, DATA), mode=0o755, exist_ok=True)
        meta = {"name": name, "created_at": time.time_ns(), "mountpoint": self.data(name)}
        write_json(os.path.join(d, META), meta)
        return meta

    def inspect(self, name: str) -> dict:
        check_name(name, "volume")
        try:
            raw = read_json(os.path.join(self.dir, name, META))
        except (FileNotFoundError, NotADirectoryError):
            raise NotFound(f"no such volume: {name}") from None
        return raw if isinstance(raw, dict) else {"name": name}

    def list(self) -> list[dict]:
        out = []
        for name in sorted(os.listdir(self.dir)):
            try:
                out.append(self.inspect(name))
            except (NotFound, OSError, ValueError):
                continue
        return out

    def remove(self, name: str, users: list[str]) -> None:
        self.inspect(name)
        if users:
            raise InvalidState(f"volume {name} is in use by {', '.join(sorted(users))}")
        gone = os.path.join(self.dir, f".removed-{name}-{time.time_ns()}")  # not a volume name: never listed
        os.rename(os.path.join(self.dir, name), gone)  # at once: a crash midway never leaves a half volume
        shutil.rmtree(gone)
