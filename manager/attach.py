"""What a new container is attached to, decided by the manager before its shim is asked: the network plan (the
network's CNI list and ports, a namespace to join, or none) and the mount plans (host paths checked, named
volumes made), plus the /etc/hosts lists of the containers on one network (`sync_peers`).

Everything here fails with an InvalidArgument or NotFound naming the flag before anything is made. The manager
only reads what shims wrote (each container's network record, <root>/containers/<id>/network.json); it never
enters a namespace."""

from __future__ import annotations

import logging
import os
import shutil
import socket
import stat

from shimproto.errors import InvalidArgument, InvalidState, ShimdError
from shimproto.model import PAUSED, RUNNING
from shimproto.plans import (
    CONTAINER_PREFIX,
    HOST,
    NONE,
    MountPlan,
    NamespacePlan,
    NetworkPlan,
    PortMapping,
    TmpfsSpec,
    VolumeSpec,
)
from shimproto.pod import NAMESPACES, ns_target
from shimproto.runflags import DeviceSpec
from shimproto.spec import ContainerSpec

from .entry import Entry
from .networks import read_record
from .registry import Registry

log = logging.getLogger("shimd.manager")
INITS = ("tini-static", "catatonit")  # --init's reaper: static binaries, so any image can run them


def _running(r: Registry, id: str, what: str) -> Entry:
    target = r.get(id)
    if target.status.get("status") not in (RUNNING, PAUSED) or not target.status.get("pid"):
        raise InvalidState(f"cannot join the {what} of container {target.id}: it is not running")
    return target


def network_plan(r: Registry, spec: ContainerSpec) -> NetworkPlan:
    """What the shim attaches. A container joining another's network shares its /etc/hostname, hosts and
    resolv.conf too (docker's container:ID), each unless the joining one asks for its own (shimd/etcfiles.py)."""
    mode = spec.network
    if spec.conflist is not None:  # given directly (a CRI pod's): no network of ours, no peers
        return NetworkPlan(mode="cni", network=spec.conflist["name"], conflist=spec.conflist,
                           ports=[PortMapping.parse(p) for p in spec.publish], peers=[], path=spec.cni_bin_dir)
    if mode in (HOST, NONE):
        return NetworkPlan(mode=mode)
    if mode.startswith(CONTAINER_PREFIX):
        target = _running(r, mode[len(CONTAINER_PREFIX):], "network")
        files = r.store.dir(target.id)
        if target.meta.spec.network == HOST:
            return NetworkPlan(mode=HOST, files=files)
        return NetworkPlan(mode="join", join=f"/proc/{target.status['pid']}/ns/net", files=files)
    net = r.networks.get(mode)
    return NetworkPlan(mode="cni", network=net.name, conflist=net.conflist(r.networks.ipam_dir),
                       ports=[PortMapping.parse(p) for p in spec.publish], peers=peers(r, net.name))


def hostname_of(r: Registry, e: Entry, depth: int = 0) -> str:
    """The name a container's uts namespace has: its own, the host's, or the one of the container it joined
    (uts, else network, as docker names a container that joins another's network after it)."""
    spec = e.meta.spec
    if spec.uts == HOST:
        return socket.gethostname()
    joined = ns_target(spec.uts) or ("" if spec.hostname else ns_target(spec.network))
    if joined and joined in r.entries and depth < 8:
        return hostname_of(r, r.entries[joined], depth + 1)
    return spec.hostname or e.id


def namespace_plan(r: Registry, spec: ContainerSpec) -> NamespacePlan:
    """ipc, pid and uts resolved: container:ID becomes the path of that running container's namespace (its
    init's), or "host" when that container has the host's; with uts not its own, the name the container has."""
    out = NamespacePlan()
    for kind in NAMESPACES:
        mode = getattr(spec, kind)
        if mode == HOST:
            setattr(out, kind, HOST)
        elif ns_target(mode):
            target = _running(r, ns_target(mode), f"{kind} namespace")
            shared = getattr(target.meta.spec, kind) == HOST
            setattr(out, kind, HOST if shared else f"/proc/{target.status['pid']}/ns/{kind}")
            if kind == "uts":
                out.hostname = hostname_of(r, target)
    if spec.uts == HOST:
        out.hostname = socket.gethostname()
    elif not spec.uts and not spec.hostname and ns_target(spec.network) in r.entries:
        out.hostname = hostname_of(r, r.entries[ns_target(spec.network)])
    return out


def check_log_path(spec: ContainerSpec) -> None:
    """A CRI client makes the log's directory (and owns the file): it is never made here."""
    if spec.log_path and not os.path.isdir(os.path.dirname(spec.log_path)):
        raise InvalidArgument(f"invalid log_path {spec.log_path}: directory {os.path.dirname(spec.log_path)} "
                              f"does not exist")


def init_binary() -> str:
    for name in INITS:
        path = shutil.which(name)
        if path:
            return os.path.realpath(path)
    raise InvalidArgument(f"--init needs {' or '.join(INITS)} on this host (Debian's tini package has tini-static)")


def check_devices(spec: ContainerSpec) -> None:
    for text in spec.devices:
        d = DeviceSpec.parse(text)
        try:
            mode = os.stat(d.host).st_mode
        except OSError as e:
            raise InvalidArgument(f"invalid --device {text!r}: {d.host}: {e.strerror}") from None
        if not stat.S_ISCHR(mode) and not stat.S_ISBLK(mode):
            raise InvalidArgument(f"invalid --device {text!r}: {d.host} is not a device")


def mount_plans(r: Registry, spec: ContainerSpec) -> list[MountPlan]:
    """The container's mounts after the /etc files: --init's reaper, -v, --tmpfs (devices checked too: all of it
    before any named volume is made)."""
    check_devices(spec)
    if spec.init:
        from runtime.bundle import INIT_PATH  # here: a restarting manager's restore needs no runtime module

        out = [MountPlan("bind", INIT_PATH, init_binary(), readonly=True)]
    else:
        out = []
    vols = [(text, VolumeSpec.parse(text)) for text in spec.volumes]
    for text, v in vols:  # every host path first: a bad one refuses the create before any volume is made
        if not v.named and not os.path.exists(v.source):
            raise InvalidArgument(f"invalid volume {text!r}: host path {v.source} does not exist")
    for _, v in vols:
        if v.named:
            r.volumes.create(v.source, exist_ok=True)
            out.append(MountPlan("bind", v.destination, r.volumes.data(v.source), v.readonly, copy_up=True,
                                 propagation=v.propagation))
            continue
        out.append(MountPlan("bind", v.destination, v.source, v.readonly, propagation=v.propagation))
    out += [MountPlan("tmpfs", t.destination, options=t.options) for t in map(TmpfsSpec.parse, spec.tmpfs)]
    return out


def volume_users(r: Registry, name: str) -> list[str]:
    return [e.id for e in r.entries.values()
            if any(VolumeSpec.parse(v).source == name for v in e.meta.spec.volumes)]


def network_users(r: Registry, name: str) -> list[str]:
    return [e.id for e in r.entries.values() if e.meta.spec.network == name]


# --- names between containers: /etc/hosts -------------------------------------------------------------------------

def _on(r: Registry, network: str) -> list[Entry]:
    return [e for e in r.entries.values() if e.meta.spec.network == network and not e.removed]


def peers(r: Registry, network: str) -> list[list[str]]:
    """[ip, id, hostname?] of every container on the network that has an address."""
    out = []
    for e in _on(r, network):
        ip = read_record(r.store.dir(e.id)).get("ip")
        if isinstance(ip, str) and ip:
            names = [e.id] + ([e.meta.spec.hostname] if e.meta.spec.hostname not in ("", e.id) else [])
            out.append([ip, *names])
    return out


async def sync_peers(r: Registry, network: str) -> None:
    """Send every live container on the network the current list (each shim rewrites its /etc/hosts)."""
    if network in ("", HOST, NONE) or network.startswith(CONTAINER_PREFIX):
        return
    current = peers(r, network)
    for e in _on(r, network):
        if e.client is None or not e.state.watches_shim:
            continue
        try:
            await r.call(e, "hosts", {"peers": current}, timeout=5.0)
        except ShimdError as err:
            log.warning("[%s] hosts of network %s not updated: %s", e.id, network, err)
