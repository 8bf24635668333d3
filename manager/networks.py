"""Network definitions: <root>/networks/<name>.json, written atomically, and the CNI configuration list each one
stands for. Nothing here runs a plugin or touches a namespace: the shim does (shimd/net.py), from the list the
manager gives it.

A network is a Linux bridge with host-local IPAM whose leases live under <root>/networks/ipam (never
/var/lib/cni), chained with portmap (published ports) and firewall (forwarding to and from the containers). The
default network `bridge` (bridge shimd0, 10.88.0.0/16) is made on first use; `network create NAME` takes the next
free 10.89.N.0/24 unless --subnet says otherwise.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import time
from dataclasses import asdict, dataclass

from shimproto.errors import AlreadyExists, InvalidArgument, InvalidState, NotFound, ShimdError, Unavailable
from shimproto.fsutil import read_json, write_json
from shimproto.plans import BRIDGE, HOST, NONE, PortMapping, check_name

CNI_VERSION = "1.0.0"
DEFAULT_SUBNET = "10.88.0.0/16"
POOL = ipaddress.ip_network("10.89.0.0/16")  # named networks get a /24 of it each
RESERVED = (HOST, NONE, "default")
RECORD = "network.json"  # in a container's dir, written by its shim (shimd/net.py)


def read_record(container_dir: str) -> dict:
    """The network record a container's shim wrote ({} when it has none: host, none, joined, or not yet)."""
    try:
        raw = read_json(os.path.join(container_dir, RECORD))
    except (OSError, ValueError):
        return {}
    return raw if isinstance(raw, dict) else {}


def published(rec: dict) -> list[PortMapping]:
    """The ports a record says are published, host ports as bound."""
    out = []
    for p in rec.get("ports") or []:
        try:
            out.append(PortMapping.from_wire(p))
        except ShimdError:
            continue
    return out


@dataclass
class Network:
    name: str
    subnet: str
    gateway: str
    bridge: str
    created_at: int = 0

    def conflist(self, ipam_dir: str) -> dict:
        return {"cniVersion": CNI_VERSION, "name": self.name, "plugins": [
            {"type": "bridge", "bridge": self.bridge, "isGateway": True, "ipMasq": True, "hairpinMode": True,
             "ipam": {"type": "host-local", "dataDir": ipam_dir, "routes": [{"dst": "0.0.0.0/0"}],
                      "ranges": [[{"subnet": self.subnet, "gateway": self.gateway}]]}},
            {"type": "portmap", "capabilities": {"portMappings": True}, "snat": True},
            {"type": "firewall"},
        ]}

    def to_json(self) -> dict:
        return asdict(self)


def _bridge_name(name: str) -> str:
    return "shimd0" if name == BRIDGE else "shimd-" + hashlib.sha256(name.encode()).hexdigest()[:8]


def _subnet(text: str) -> ipaddress.IPv4Network:
    try:
        net = ipaddress.ip_network(text, strict=True)
    except ValueError as e:
        raise InvalidArgument(f"invalid subnet {text!r}: {e}") from None
    if not isinstance(net, ipaddress.IPv4Network) or net.prefixlen > 29:
        raise InvalidArgument(f"invalid subnet {text!r}: an IPv4 network of /29 or larger")
    return net


class Networks:
    def __init__(self, root: str) -> None:
        self.dir = os.path.join(root, "networks")
        self.ipam_dir = os.path.join(self.dir, "ipam")
        os.makedirs(self.dir, mode=0o700, exist_ok=True)
        os.chmod(self.dir, 0o700)  # root's alone: runc and the CNI plugins run as root

    def _path(self, name: str) -> str:
        return os.path.join(self.dir, f"{name}.json")

    def list(self) -> list[Network]:
        out = []
        for f in sorted(os.listdir(self.dir)):
            if f.endswith(".json"):
                try:
                    out.append(Network(**read_json(os.path.join(self.dir, f))))  # type: ignore[arg-type]
                except (OSError, ValueError, TypeError):
                    continue
        return out

    def get(self, name: str) -> Network:
        """The network of that name; `bridge` is made on first use."""
        check_name(name, "network")
        try:
            return Network(**read_json(self._path(name)))  # type: ignore[arg-type]
        except FileNotFoundError:
            if name == BRIDGE:
                return self.create(BRIDGE, DEFAULT_SUBNET)
            raise NotFound(f"no such network: {name}") from None

    inspect = get

    def create(self, name: str, subnet: str = "") -> Network:
        check_name(name, "network")
        if name in RESERVED:
            raise InvalidArgument(f"network name {name!r} is reserved")
        if os.path.exists(self._path(name)):
            raise AlreadyExists(f"network {name} already exists")
        taken = [ipaddress.ip_network(n.subnet) for n in self.list()]
        net = _subnet(subnet) if subnet else next(
            (s for s in POOL.subnets(new_prefix=24) if not any(s.overlaps(t) for t in taken)), None)
        if net is None:
            raise Unavailable(f"no free /24 left in {POOL} for network {name}; give --subnet")
        if clash := next((t for t in taken if net.overlaps(t)), None):
            raise InvalidArgument(f"subnet {net} overlaps {clash} of another network")
        n = Network(name=name, subnet=str(net), gateway=str(next(net.hosts())), bridge=_bridge_name(name),
                    created_at=time.time_ns())
        write_json(self._path(name), n.to_json())
        return n

    def remove(self, name: str, users: list[str]) -> None:
        """Forget a network no container uses (users: the ids of those that do). Its bridge stays on the host,
        unused, as CNI's bridge plugin never deletes one."""
        self.get(name)
        if users:
            raise InvalidState(f"network {name} is in use by {', '.join(sorted(users))}")
        os.unlink(self._path(name))
