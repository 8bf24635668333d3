"""Configuration: defaults < the TOML file (--config, default /etc/shimd/config.toml) < command-line flags.

    root = "/var/lib/shimd"        # persistent state
    state = "/run/shimd"           # runtime state and the API socket
    runtime = "runc"               # OCI runtime binary: runc or crun (a path works too)
    socket_group = ""              # a group whose members may use the API socket (default: root only)
    memory_merge = true            # shims' memory offered to the kernel's samepage merging; starts ksmd if stopped
    cgroup_parent = ""             # containers' cgroups under it; "": /shimd for the default root, else
                                   # /shimd-<hash of the root>, so two managers never share a cgroup

    [container]                    # defaults for new containers
    log_max_size = "100m"          # rotate the log past this size (0: never)
    log_max_files = 5              # files kept, the current one included
    stop_timeout = 10              # seconds between SIGTERM and SIGKILL for stop
    network = "bridge"             # for containers that name none: bridge, host, none or a network's name

    [cri]                          # the Kubernetes CRI server (manager/cri/config.py documents its keys)
    enabled = true
    socket = ""                    # "": <state>/cri.sock

SHIMD_CRI=0 in the environment turns the CRI server off whatever the file says (the test suite does, except in
the CRI tests).

SHIMD_DEFAULT_NETWORK in the environment overrides [container] network (the test suite runs containers with
"none" so that only the networking tests, each in a network namespace of its own, make bridges and rules).
"""

from __future__ import annotations

import hashlib
import os
import re
import tomllib
from dataclasses import dataclass, field

from shimproto.errors import ShimdError
from shimproto.plans import check_network_mode

from .cri.config import CriConfig, CriConfigError
from .registry import Defaults

DEFAULT_PATH = "/etc/shimd/config.toml"
NETWORK_ENV = "SHIMD_DEFAULT_NETWORK"
CRI_ENV = "SHIMD_CRI"


class ConfigError(Exception):
    pass


DEFAULT_ROOT = "/var/lib/shimd"
CGROUP_PARENT_RE = re.compile(r"/[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*/?")


@dataclass
class Config:
    root: str = DEFAULT_ROOT
    state: str = "/run/shimd"
    runtime: str = "runc"
    socket_group: str = ""
    memory_merge: bool = True
    cgroup_parent: str = ""  # "": derived from the root (_cgroup_parent)
    defaults: Defaults = field(default_factory=Defaults)
    cri: CriConfig = field(default_factory=CriConfig)

    @property
    def socket(self) -> str:
        return os.path.join(self.state, "shimd.sock")

    @property
    def pid_file(self) -> str:
        return os.path.join(self.state, "shimd.pid")


def _size(v: object, key: str) -> int:
    if isinstance(v, int) and not isinstance(v, bool) and v >= 0:
        return v
    if isinstance(v, str):
        t = v.strip().lower().removesuffix("b")
        mult = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}.get(t[-1:], 1)
        num = t[:-1] if t[-1:] in "kmg" else t
        try:
            n = int(float(num) * mult)
        except ValueError:
            n = -1
        if n >= 0:
            return n
    raise ConfigError(f"{key}: {v!r} is not a size (e.g. 100m)")


def _network(v: object, file: str) -> str:
    ok = isinstance(v, str) and bool(v) and not v.startswith("container:")
    try:
        ok = ok and check_network_mode(v) == v  # type: ignore[arg-type]
    except ShimdError:
        ok = False
    if not ok:
        raise ConfigError(f"config file {file}: container.network ({NETWORK_ENV}) must be bridge, host, none or a "
                          f"network's name, not {v!r}")
    return v  # type: ignore[return-value]


def load(path: str | None, flags: dict) -> Config:
    """The configuration from path (None: the default path, which may be absent) overridden by flags."""
    cfg = Config()
    file = path or DEFAULT_PATH
    data: dict = {}
    try:
        with open(file, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        if path is not None:
            raise ConfigError(f"config file {file}: no such file") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config file {file}: {e}") from None
    known = {"root", "state", "runtime", "socket_group", "memory_merge", "cgroup_parent", "container", "cri"}
    unknown = set(data) - known
    if unknown:
        raise ConfigError(f"config file {file}: unknown keys {sorted(unknown)}")
    for key in ("root", "state", "runtime", "socket_group", "cgroup_parent"):
        if key in data:
            if not isinstance(data[key], str):
                raise ConfigError(f"config file {file}: {key} must be a string")
            setattr(cfg, key, data[key])
    if "memory_merge" in data:
        if not isinstance(data["memory_merge"], bool):
            raise ConfigError(f"config file {file}: memory_merge must be true or false")
        cfg.memory_merge = data["memory_merge"]
    c = data.get("container", {})
    if not isinstance(c, dict) or set(c) - {"log_max_size", "log_max_files", "stop_timeout", "network"}:
        raise ConfigError(f"config file {file}: [container] takes log_max_size, log_max_files, stop_timeout, "
                          f"network")
    network = os.environ.get(NETWORK_ENV) or c.get("network")
    if network is not None:
        cfg.defaults.network = _network(network, file)
    if "log_max_size" in c:
        cfg.defaults.log_max_size = _size(c["log_max_size"], "container.log_max_size")
    if "log_max_files" in c:
        if not isinstance(c["log_max_files"], int) or c["log_max_files"] < 2:
            raise ConfigError(f"config file {file}: container.log_max_files must be an integer >= 2")
        cfg.defaults.log_max_files = c["log_max_files"]
    if "stop_timeout" in c:
        if not isinstance(c["stop_timeout"], int | float) or not 0 <= c["stop_timeout"] <= 3600:
            raise ConfigError(f"config file {file}: container.stop_timeout must be 0..3600 seconds")
        cfg.defaults.stop_timeout = float(c["stop_timeout"])
    try:
        cfg.cri = CriConfig.from_toml(data.get("cri", {}), file)
    except CriConfigError as e:
        raise ConfigError(str(e)) from None
    if os.environ.get(CRI_ENV) == "0":
        cfg.cri = CriConfig(**{**cfg.cri.__dict__, "enabled": False})
    for key, value in flags.items():
        if value is not None:
            setattr(cfg, key, value)
    cfg.root, cfg.state = os.path.abspath(cfg.root), os.path.abspath(cfg.state)
    cfg.defaults.cgroup_parent = _cgroup_parent(cfg.cgroup_parent, cfg.root, file)
    return cfg


def default_cgroup_parent(root: str) -> str:
    return "/shimd" if root == DEFAULT_ROOT else f"/shimd-{hashlib.sha256(root.encode()).hexdigest()[:8]}"


def _cgroup_parent(v: str, root: str, file: str) -> str:
    """The cgroup every container of this manager goes under: the configured one, else /shimd for the default
    root and /shimd-<8 hex of the root's path> for any other, so two managers never share a container's cgroup."""
    if not v:
        return default_cgroup_parent(root)
    if not CGROUP_PARENT_RE.fullmatch(v) or ".." in v.split("/"):
        raise ConfigError(f"config file {file}: cgroup_parent {v!r} must be an absolute path of letters, digits, "
                          f"'_', '.', '-' (e.g. /shimd-web)")
    return v.rstrip("/")
