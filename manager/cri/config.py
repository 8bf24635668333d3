"""The [cri] section of config.toml: where the CRI server listens and what it uses.

    [cri]
    enabled = true                                   # serve CRI (the front process runs beside the manager)
    socket = ""                                      # "": <state>/cri.sock
    sandbox_image = ""                               # "": the built-in pause (no registry needed)
    cni_conf_dir = "/etc/cni/net.d"                  # a pod's network: the first .conflist/.conf here, by name
    cni_bin_dir = "/usr/lib/cni"
    registries_conf = "/etc/containers/registries.conf"   # mirrors and insecure registries for pulls
    stream_address = "127.0.0.1"                     # where the Exec/Attach/PortForward URLs point
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, fields


class CriConfigError(Exception):
    pass


@dataclass(frozen=True)
class CriConfig:
    enabled: bool = True
    socket: str = ""
    sandbox_image: str = ""
    cni_conf_dir: str = "/etc/cni/net.d"
    cni_bin_dir: str = "/usr/lib/cni"
    registries_conf: str = "/etc/containers/registries.conf"
    stream_address: str = "127.0.0.1"

    def socket_path(self, state: str) -> str:
        return self.socket.removeprefix("unix://") or os.path.join(state, "cri.sock")

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> CriConfig:
        return cls(**json.loads(text))

    @classmethod
    def from_toml(cls, raw: object, file: str) -> CriConfig:
        """The [cri] table of a config file; every wrong key or type is a CriConfigError naming it."""
        if not isinstance(raw, dict):
            raise CriConfigError(f"config file {file}: [cri] must be a table")
        known = {f.name: f for f in fields(cls)}
        unknown = set(raw) - set(known)
        if unknown:
            raise CriConfigError(f"config file {file}: unknown keys in [cri]: {sorted(unknown)}")
        for key, value in raw.items():
            want = bool if key == "enabled" else str
            if not isinstance(value, want):
                kind = "true or false" if want is bool else "a string"
                raise CriConfigError(f"config file {file}: cri.{key} must be {kind}")
            path = value.removeprefix("unix://") if key == "socket" else value
            if want is str and key not in ("sandbox_image", "stream_address") and path and not path.startswith("/"):
                raise CriConfigError(f"config file {file}: cri.{key} must be an absolute path, not {value!r}")
        return cls(**raw)
