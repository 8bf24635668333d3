"""The container's /etc/hostname, /etc/hosts and /etc/resolv.conf, as docker provides them: written by the shim into
the container's directory (files_dir) and bind-mounted over the image's own files.

hosts carries docker's localhost lines, the hostname on the container's own address (127.0.1.1 without a network of
its own), and one line per other container on the same network (name resolution between containers is by /etc/hosts:
the manager sends a shim the new list when a container joins or leaves, and `rewrite_hosts` changes the file in
place, so the bind mount keeps showing it). resolv.conf is the host's with loopback nameservers dropped (they would
point at the container's own loopback); no nameserver of our own is ever added. --dns, dns_search and dns_options
replace the lines of their kind. A container on another's network shares that one's files (container_files).
"""

from __future__ import annotations

import ipaddress
import os

from runtime.bundle import BindMount
from shimproto.fsutil import atomic_write
from shimproto.plans import parse_add_host
from shimproto.spec import ContainerSpec, ShimCreate

HOST_RESOLV_CONF = "/etc/resolv.conf"
# When the host's file names only systemd-resolved's stub (127.0.0.53), docker takes resolved's list of the real
# upstream servers instead; so do we.
RESOLVED_UPSTREAM = "/run/systemd/resolve/resolv.conf"

HOSTS = """127.0.0.1\tlocalhost
::1\tlocalhost ip6-localhost ip6-loopback
fe00::0\tip6-localnet
ff00::0\tip6-mcastprefix
ff02::1\tip6-allnodes
ff02::2\tip6-allrouters
"""


def _loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


def container_resolv_conf(host_text: str) -> str:
    """The host's resolv.conf without nameservers in 127.0.0.0/8 or ::1 (docker's filter)."""
    out = []
    for line in host_text.splitlines():
        words = line.split()
        if len(words) >= 2 and words[0] == "nameserver" and _loopback(words[1]):
            continue
        out.append(line)
    return "\n".join(out) + "\n" if out else ""


def _read(path: str) -> str:
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except FileNotFoundError:
        return ""


def _has_nameserver(text: str) -> bool:
    return any(line.split()[:1] == ["nameserver"] for line in text.splitlines())


def hosts_text(hostname: str, ip: str = "", peers: list[list[str]] | tuple = ()) -> str:
    """docker's /etc/hosts: localhost lines, our own name, then [ip, name, ...] of each peer."""
    return HOSTS + f"{ip or '127.0.1.1'}\t{hostname}\n" + "".join(f"{p[0]}\t{' '.join(p[1:])}\n" for p in peers
                                                                if len(p) > 1 and p[0] != ip)


def host_lines(spec: ContainerSpec, peers: list[list[str]]) -> list[list[str]]:
    """The peers' lines ([ip, name, ...]), then --add-host's."""
    return peers + [[ip, host] for host, ip in map(parse_add_host, spec.add_hosts)]


def rewrite_hosts(files_dir: str, text: str) -> None:
    """Replace the hosts file's content in place (same inode: the container's bind mount shows the new text)."""
    with open(os.path.join(files_dir, "hosts"), "r+") as f:
        f.truncate(0)
        f.write(text)


def with_nameservers(resolv: str, dns: list[str], search: list[str] | None = None,
                     options: list[str] | None = None) -> str:
    """docker's --dns, --dns-search, --dns-option: each given list replaces the file's lines of its kind
    (search also replaces domain: the last of the two wins in resolv.conf); the others are kept."""
    drop = {"nameserver"} if dns else set()
    drop |= {"search", "domain"} if search else set()
    drop |= {"options"} if options else set()
    kept = [line for line in resolv.splitlines() if not set(line.split()[:1]) & drop]
    kept += [f"nameserver {ip}" for ip in dns]
    kept += [f"search {' '.join(search)}"] if search else []
    kept += [f"options {' '.join(options)}"] if options else []
    return "\n".join(kept) + "\n"


def write_etc_files(files_dir: str, hostname: str, host_resolv: str = HOST_RESOLV_CONF,
                    upstream: str = RESOLVED_UPSTREAM, hosts: str = "", dns: list[str] | None = None,
                    search: list[str] | None = None, options: list[str] | None = None) -> list[BindMount]:
    """Write hostname, hosts and resolv.conf into files_dir; return their bind mounts into the container."""
    host = _read(host_resolv)
    resolv = container_resolv_conf(host)
    if _has_nameserver(host) and not _has_nameserver(resolv) and os.path.exists(upstream):
        resolv = container_resolv_conf(_read(upstream))
    if dns or search or options:
        resolv = with_nameservers(resolv, dns or [], search or [], options or [])
    files = {
        "hostname": f"{hostname}\n",
        "hosts": hosts or hosts_text(hostname),
        "resolv.conf": resolv,
    }
    os.makedirs(files_dir, mode=0o711, exist_ok=True)
    for name, text in files.items():  # written again by every create: no fsync (they were 6 of a create's 7)
        atomic_write(os.path.join(files_dir, name), text.encode(), mode=0o644, durable=False)
    return [BindMount(os.path.join(files_dir, name), f"/etc/{name}") for name in files]


def container_files(req: ShimCreate, id: str, ip: str) -> list[BindMount]:
    """The container's three files, written into req.files_dir. A container that joins another's network
    (req.network.files) binds that one's files instead, as docker does for --network container:ID, except each it
    asks to have its own: hostname (given), hosts (add_hosts), resolv.conf (dns, dns_search, dns_options)."""
    spec = req.spec
    hostname = req.namespaces.hostname or spec.hostname or id
    hosts = hosts_text(hostname, ip, host_lines(spec, req.network.peers))
    binds = write_etc_files(req.files_dir, hostname, hosts=hosts, dns=spec.dns, search=spec.dns_search,
                            options=spec.dns_options)
    shared = req.network.files
    if not shared:
        return binds
    own = {"/etc/hostname": bool(spec.hostname), "/etc/hosts": bool(spec.add_hosts),
           "/etc/resolv.conf": bool(spec.dns or spec.dns_search or spec.dns_options)}
    theirs = {b.destination: os.path.join(shared, os.path.basename(b.destination)) for b in binds}
    return [b if own[b.destination] or not os.path.isfile(theirs[b.destination])
            else BindMount(theirs[b.destination], b.destination) for b in binds]
