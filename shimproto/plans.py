"""docker run's network, port and mount flags as typed values: parsed once from their docker text (the CLI parses
them for an early error, the manager again to validate what any client sent), and the plans the manager hands a
shim in its create request (ShimCreate.network, ShimCreate.mounts): what to attach and mount, already resolved.

    -p [IP:][HOSTPORT:]CTRPORT[/tcp|udp]   PortMapping (host port 0: the shim takes a free one)
    -v /host:/ctr[:OPTS]  -v NAME:/ctr[:OPTS]   VolumeSpec (a host path is absolute; else a volume name); OPTS
                                           is ro or rw and/or a propagation ([r]shared, [r]slave, [r]private),
                                           ','-joined
    --tmpfs /ctr[:size=64m,mode=1777,...]  TmpfsSpec
    --network bridge|host|none|container:ID|NAME
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import asdict, dataclass, field

from .errors import InvalidArgument

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")  # network and volume names, as docker's
PROTOCOLS = ("tcp", "udp")
TMPFS_FLAGS = ("ro", "rw", "noexec", "exec", "nosuid", "suid", "nodev", "dev")
TMPFS_VALUE = re.compile(r"(size=\d+[kmgKMG%]?|mode=[0-7]{3,4}|uid=\d+|gid=\d+|nr_inodes=\d+[kmgKMG]?)")

HOST, NONE, BRIDGE = "host", "none", "bridge"
PROPAGATIONS = ("rprivate", "private", "rshared", "shared", "rslave", "slave")
CONTAINER_PREFIX = "container:"


def check_name(name: str, what: str) -> str:
    if not NAME_RE.fullmatch(name):
        raise InvalidArgument(f"invalid {what} name {name!r}: use letters, digits, '_', '.', '-' (at most 64)")
    return name


def clean_path(path: str, what: str) -> str:
    """An absolute path with no '..', '.' or empty components: refused before anything is made, so no
    normalisation can take it somewhere the user did not write."""
    if not path.startswith("/"):
        raise InvalidArgument(f"{what} {path!r} must be an absolute path")
    parts = path.split("/")[1:]
    if any(p in ("..", ".") for p in parts) or "\0" in path or "," in path:
        raise InvalidArgument(f"{what} {path!r} may not contain '..', '.' or ','")
    return "/" + "/".join(p for p in parts if p)


# --- ports -------------------------------------------------------------------------------------------------------

def _port(text: str, what: str, flag: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise InvalidArgument(f"invalid port mapping {flag!r}: {what} {text!r} is not a port (1-65535)")
    return int(text)


@dataclass(frozen=True)
class PortMapping:
    container_port: int
    host_port: int = 0  # 0: a free one, chosen when the container is created
    protocol: str = "tcp"
    host_ip: str = ""  # "": every address

    @classmethod
    def parse(cls, text: str) -> PortMapping:
        body, _, proto = text.partition("/")
        proto = proto or "tcp"
        if proto not in PROTOCOLS:
            raise InvalidArgument(f"invalid port mapping {text!r}: protocol must be tcp or udp")
        parts = body.rsplit(":", 2)
        ip = parts[0] if len(parts) == 3 else ""
        if ip.startswith("[") and ip.endswith("]"):
            ip = ip[1:-1]
        if ip:
            try:
                ipaddress.ip_address(ip)
            except ValueError:
                raise InvalidArgument(f"invalid port mapping {text!r}: {ip!r} is not an IP address") from None
        host = parts[-2] if len(parts) >= 2 else ""
        return cls(container_port=_port(parts[-1], "container port", text),
                   host_port=_port(host, "host port", text) if host else 0, protocol=proto, host_ip=ip)

    def to_wire(self) -> dict:
        return asdict(self)

    @classmethod
    def from_wire(cls, raw: object) -> PortMapping:
        if not isinstance(raw, dict):
            raise InvalidArgument("a port mapping must be a map")
        try:
            pm = cls(int(raw["container_port"]), int(raw.get("host_port", 0)), str(raw.get("protocol", "tcp")),
                     str(raw.get("host_ip", "")))
        except (KeyError, TypeError, ValueError):
            raise InvalidArgument(f"malformed port mapping {raw!r}") from None
        if pm.protocol not in PROTOCOLS or not 0 < pm.container_port < 65536 or not 0 <= pm.host_port < 65536:
            raise InvalidArgument(f"malformed port mapping {raw!r}")
        return pm

    def render(self) -> str:
        """docker's form: 0.0.0.0:8080->80/tcp"""
        return f"{self.host_ip or '0.0.0.0'}:{self.host_port}->{self.container_port}/{self.protocol}"


# --- mounts ------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class VolumeSpec:
    source: str  # an absolute host path, or a volume name
    destination: str
    readonly: bool = False
    propagation: str = ""  # "": rprivate; else one of PROPAGATIONS

    @property
    def named(self) -> bool:
        return not self.source.startswith("/")

    @classmethod
    def parse(cls, text: str) -> VolumeSpec:
        parts = text.split(":")
        if len(parts) not in (2, 3) or not parts[0] or not parts[1]:
            raise InvalidArgument(f"invalid volume {text!r}: use /HOST/PATH:/CONTAINER/PATH[:ro] or "
                                  f"NAME:/CONTAINER/PATH[:ro]")
        opts = parts[2].split(",") if len(parts) == 3 else []
        modes = [o for o in opts if o in ("ro", "rw")]
        props = [o for o in opts if o in PROPAGATIONS]
        if len(modes) + len(props) != len(opts) or len(modes) > 1 or len(props) > 1:
            raise InvalidArgument(f"invalid volume {text!r}: the options are ro or rw and one propagation of "
                                  f"{', '.join(PROPAGATIONS)}")
        source = parts[0]
        if source.startswith("/"):
            source = clean_path(source, "volume host path")
        elif source.startswith(".") or "/" in source:
            raise InvalidArgument(f"invalid volume {text!r}: host path {source!r} must be absolute")
        else:
            check_name(source, "volume")
        dest = clean_path(parts[1], "volume container path")
        if dest == "/":
            raise InvalidArgument(f"invalid volume {text!r}: cannot mount over the container's root")
        return cls(source, dest, modes == ["ro"], props[0] if props else "")


@dataclass(frozen=True)
class TmpfsSpec:
    destination: str
    options: tuple[str, ...] = ()

    @classmethod
    def parse(cls, text: str) -> TmpfsSpec:
        path, _, opts = text.partition(":")
        dest = clean_path(path, "tmpfs path")
        if dest == "/":
            raise InvalidArgument("--tmpfs: cannot mount over the container's root")
        options = tuple(o for o in opts.split(",") if o)
        for o in options:
            if o not in TMPFS_FLAGS and not TMPFS_VALUE.fullmatch(o):
                raise InvalidArgument(f"invalid tmpfs option {o!r} in {text!r}: use size=, mode=, uid=, gid=, "
                                      f"nr_inodes=, or {', '.join(TMPFS_FLAGS)}")
        return cls(dest, options)


@dataclass(frozen=True)
class MountPlan:
    """One mount of the container after the standard ones, resolved by the manager: a bind (host path or a
    volume's data dir) or a tmpfs. copy_up: a named volume whose data dir is still empty gets the image's content
    at the destination first (docker's first-use copy)."""

    kind: str  # bind | tmpfs
    destination: str
    source: str = ""
    readonly: bool = False
    options: tuple[str, ...] = ()
    copy_up: bool = False
    propagation: str = ""  # a bind's: "" is rprivate

    def to_wire(self) -> dict:
        return {**asdict(self), "options": list(self.options)}

    @classmethod
    def from_wire(cls, raw: object) -> MountPlan:
        if not isinstance(raw, dict) or raw.get("kind") not in ("bind", "tmpfs"):
            raise InvalidArgument(f"malformed mount {raw!r}")
        if raw.get("propagation", "") not in ("", *PROPAGATIONS):
            raise InvalidArgument(f"malformed mount {raw!r}: propagation")
        try:
            return cls(str(raw["kind"]), clean_path(str(raw["destination"]), "mount destination"),
                       str(raw.get("source", "")), bool(raw.get("readonly")),
                       tuple(str(o) for o in raw.get("options") or ()), bool(raw.get("copy_up")),
                       str(raw.get("propagation", "")))
        except (KeyError, TypeError):
            raise InvalidArgument(f"malformed mount {raw!r}") from None


# --- networks ----------------------------------------------------------------------------------------------------

def check_network_mode(mode: str) -> str:
    """"" (the manager's default), bridge, host, none, container:ID or a network's name."""
    if mode in ("", HOST, NONE, BRIDGE):
        return mode
    if mode.startswith(CONTAINER_PREFIX):
        if not mode[len(CONTAINER_PREFIX):]:
            raise InvalidArgument("--network container: needs a container id")
        return mode
    return check_name(mode, "network")


@dataclass
class NetworkPlan:
    """What the shim attaches: mode host (no namespace of its own), none (runc's own namespace, loopback up),
    join (the namespace at `join`), or cni (a namespace pinned by the shim, the loopback plugin, then `conflist`
    with `ports`; `peers` are the hosts entries of the other containers on the network). files: for join, the
    directory of the joined container's hostname, hosts and resolv.conf, shared as docker shares them."""

    mode: str = NONE  # host | none | join | cni
    network: str = ""  # the network's name (cni)
    conflist: dict = field(default_factory=dict)
    ports: list[PortMapping] = field(default_factory=list)
    join: str = ""
    peers: list[list[str]] = field(default_factory=list)  # [ip, name, ...]
    files: str = ""
    path: str = ""  # cni: the plugins' directory ("" : the shim's own search path)

    def to_wire(self) -> dict:
        return {"mode": self.mode, "network": self.network, "conflist": self.conflist,
                "ports": [p.to_wire() for p in self.ports], "join": self.join, "peers": self.peers,
                "files": self.files, "path": self.path}

    @classmethod
    def from_wire(cls, raw: object) -> NetworkPlan:
        if not raw:
            return cls()
        if not isinstance(raw, dict) or raw.get("mode") not in (HOST, NONE, "join", "cni"):
            raise InvalidArgument(f"malformed network plan {raw!r}")
        peers = raw.get("peers") or []
        if not isinstance(peers, list) or not all(isinstance(p, list) and all(isinstance(x, str) for x in p)
                                                  for p in peers):
            raise InvalidArgument("malformed network plan: peers")
        return cls(mode=raw["mode"], network=str(raw.get("network", "")), conflist=dict(raw.get("conflist") or {}),
                   ports=[PortMapping.from_wire(p) for p in raw.get("ports") or []], join=str(raw.get("join", "")),
                   peers=peers, files=str(raw.get("files", "")), path=str(raw.get("path", "")))


@dataclass
class NamespacePlan:
    """The ipc, pid and uts namespaces as the manager resolved them: "" one of the container's own (runc makes
    it), "host" none of its own, else the path of a running container's namespace to join. hostname: the name in
    /etc/hostname and /etc/hosts when the uts namespace is not the container's own ("" : its own name)."""

    ipc: str = ""
    pid: str = ""
    uts: str = ""
    hostname: str = ""

    def to_wire(self) -> dict:
        return asdict(self)

    @classmethod
    def from_wire(cls, raw: object) -> NamespacePlan:
        if not raw:
            return cls()
        if not isinstance(raw, dict) or not all(isinstance(raw.get(k, ""), str) for k in ("ipc", "pid", "uts",
                                                                                          "hostname")):
            raise InvalidArgument(f"malformed namespace plan {raw!r}")
        return cls(raw.get("ipc", ""), raw.get("pid", ""), raw.get("uts", ""), raw.get("hostname", ""))


def _ip(text: str, what: str) -> str:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise InvalidArgument(f"invalid {what}: {text!r} is not an IP address") from None


def parse_add_host(text: str) -> tuple[str, str]:
    """--add-host HOST:IP (docker's form; IPv6 addresses keep their colons)."""
    host, sep, ip = text.partition(":")
    if not sep or not re.fullmatch(r"[A-Za-z0-9]([A-Za-z0-9.-]{0,252})", host):
        raise InvalidArgument(f"invalid --add-host {text!r}: use HOST:IP")
    return host, _ip(ip.strip("[]"), f"--add-host {text!r}")


def check_names(add_hosts: list[str], dns: list[str]) -> None:
    for text in add_hosts:
        parse_add_host(text)
    for ip in dns:
        _ip(ip, "--dns")


def check_request(network: str, publish: list[str], volumes: list[str], tmpfs: list[str]) -> None:
    """Every network, port and mount flag of a container spec parses (each error names the flag's text); the
    same container path may be mounted once only."""
    mode = check_network_mode(network)
    ports = [PortMapping.parse(p) for p in publish]
    if ports and mode in (HOST, NONE) or ports and mode.startswith(CONTAINER_PREFIX):
        raise InvalidArgument(f"published ports need a network of their own; --network {mode} has none")
    taken = [(p.host_ip, p.host_port, p.protocol) for p in ports if p.host_port]
    if len(taken) != len(set(taken)):
        raise InvalidArgument("the same host port is published twice")
    dests = [VolumeSpec.parse(v).destination for v in volumes] + [TmpfsSpec.parse(t).destination for t in tmpfs]
    if len(dests) != len(set(dests)):
        raise InvalidArgument("the same container path is mounted twice")
