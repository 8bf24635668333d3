"""The spec fields a pod's containers need beyond docker run's basics (what a Kubernetes CRI server sends), each
checked here once, every error one InvalidArgument naming the field:

    ipc, pid, uts        "" (a namespace of its own), "host", or "container:ID" (join a running container's)
    masked_paths, readonly_paths   None: the defaults; a list of absolute paths replaces them ([] : none)
    group_add            supplementary groups: a gid or a group name of the container's /etc/group
    oom_score_adj        -1000..1000 (the shim may raise it: shimd/ocispec.py says when)
    log_path             an absolute path for the CRI log instead of the container's directory (not rotated)
    conflist             a CNI network configuration list (or a single plugin's .conf) instead of a named network
    cni_bin_dir          the directory of conflist's plugins ("" : the shim's own search path)

The sysctl rules that depend on ipc are in shimproto.runflags.check_sysctl.
"""

from __future__ import annotations

import re

from .errors import InvalidArgument
from .plans import CONTAINER_PREFIX, HOST

NAMESPACES = ("ipc", "pid", "uts")
OOM_MIN, OOM_MAX = -1000, 1000
GROUP_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,255}\$?")


def check_ns_mode(value: str, field: str) -> str:
    if value in ("", HOST):
        return value
    if value.startswith(CONTAINER_PREFIX) and value[len(CONTAINER_PREFIX):]:
        return value
    raise InvalidArgument(f"invalid {field} {value!r}: use \"\" (its own), \"host\" or \"container:ID\"")


def ns_target(value: str) -> str:
    """The container id of a "container:ID" mode, else ""."""
    return value[len(CONTAINER_PREFIX):] if value.startswith(CONTAINER_PREFIX) else ""


def check_paths(paths: list[str] | None, field: str) -> None:
    for p in paths or ():
        if not p.startswith("/") or "\0" in p or "\n" in p or ".." in p.split("/"):
            raise InvalidArgument(f"invalid {field} entry {p!r}: must be an absolute path without '..'")


def check_groups(groups: list[str]) -> None:
    for g in groups:
        if g.isascii() and g.isdigit():
            if int(g) >= 2**32 - 1:
                raise InvalidArgument(f"invalid group_add {g!r}: gid out of range")
        elif not GROUP_NAME.fullmatch(g):
            raise InvalidArgument(f"invalid group_add {g!r}: use a gid or a group name")


def check_oom(value: int | None) -> None:
    if value is not None and not OOM_MIN <= value <= OOM_MAX:
        raise InvalidArgument(f"invalid oom_score_adj {value}: must be between {OOM_MIN} and {OOM_MAX}")


def check_log_path(path: str) -> None:
    if path and (not path.startswith("/") or path.endswith("/") or "\0" in path or ".." in path.split("/")):
        raise InvalidArgument(f"invalid log_path {path!r}: must be an absolute file path without '..'")


def check_dns_words(words: list[str], field: str) -> None:
    """dns_search domains and dns_options (ndots:5 ...): one word each, written into resolv.conf."""
    for w in words:
        if not w or any(c.isspace() for c in w) or "#" in w or ";" in w:
            raise InvalidArgument(f"invalid {field} entry {w!r}: one word, no spaces or comments")


def check_cni_bin_dir(path: str, conflist: dict | None) -> None:
    if not path:
        return
    if conflist is None:
        raise InvalidArgument("cni_bin_dir needs a conflist: a named network's plugins are the manager's")
    if not path.startswith("/") or ":" in path or "\0" in path or ".." in path.split("/"):
        raise InvalidArgument(f"invalid cni_bin_dir {path!r}: must be an absolute path without '..' or ':'")


def check_conflist(raw: object) -> dict | None:
    """A CNI configuration list {cniVersion, name, plugins: [{type, ...}, ...]}, or a single plugin's .conf
    {cniVersion, name, type, ...} wrapped into one; None stays None."""
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise InvalidArgument("invalid conflist: must be a map (the JSON of a .conflist or .conf file)")
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise InvalidArgument("invalid conflist: 'name' must be a non-empty string")
    if "plugins" not in raw and isinstance(raw.get("type"), str):
        plugin = {k: v for k, v in raw.items() if k not in ("cniVersion", "name")}
        raw = {"cniVersion": raw.get("cniVersion", "0.4.0"), "name": name, "plugins": [plugin]}
    plugins = raw.get("plugins")
    if not isinstance(plugins, list) or not plugins:
        raise InvalidArgument(f"invalid conflist {name!r}: 'plugins' must be a non-empty list")
    for n, p in enumerate(plugins):
        if not isinstance(p, dict) or not isinstance(p.get("type"), str) or not p["type"]:
            raise InvalidArgument(f"invalid conflist {name!r}: plugin {n} must be a map with a 'type' string")
        if "/" in p["type"] or p["type"].startswith("."):
            raise InvalidArgument(f"invalid conflist {name!r}: plugin type {p['type']!r} is not a plugin name")
    if not isinstance(raw.get("cniVersion", ""), str):
        raise InvalidArgument(f"invalid conflist {name!r}: 'cniVersion' must be a string")
    return dict(raw)
