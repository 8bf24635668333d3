"""The container's network as its shim owns it: the published host ports held, the network namespace pinned in the
shim's own mount namespace, the CNI plugins' ADD and DEL (runtime/cni.py), and the record DEL needs.

Life (a state table, as shimd/process/): detached -pin-> pinned -attach-> attached -release-> released, and
pinned -release-> released for an ADD that failed. Only the cni mode gets that far; host, none and join have
nothing to hold.

- Ports first: each published host port is bound (not listened on) and the socket kept for the container's life,
  so a port already taken fails the create before anything else exists, `-p CTRPORT` gets a free port from the
  kernel, and no later process can take it. Traffic never reaches these sockets: the portmap plugin's DNAT rules
  send it to the container first.
- The pin is a bind mount of a new network namespace on <shim dir>/netns, made in the shim's mount namespace like
  the container's other mounts: invisible to the manager's mount namespace, whichever it is, and gone with the
  shim. runc joins it; it lives as long as the container, across restarts of the container and of the manager.
- The record (<container dir>/network.json, on --root) is written before ADD and completed with its result after:
  everything DEL needs when the shim is gone (`shimd delete --files DIR`, release_recorded below), so a create
  killed midway or a shim that died is still torn down (lease, port rules, masquerade) by the next manager.
"""

from __future__ import annotations

import logging
import os
import socket

from runtime.cni import Cni, CniError, Result
from shimproto.errors import AlreadyExists, InvalidState, RuntimeFailed
from shimproto.fsutil import read_json, write_json
from shimproto.plans import HOST, NONE, NetworkPlan, PortMapping

from . import sys as _sys

RECORD = "network.json"
PIN = "netns"
IFNAME = "eth0"
LOOPBACK = {"cniVersion": "1.0.0", "name": "shimd-loopback", "plugins": [{"type": "loopback"}]}

DETACHED, PINNED, ATTACHED, RELEASED = "detached", "pinned", "attached", "released"
TRANSITIONS = {(DETACHED, "pin"): PINNED, (PINNED, "attach"): ATTACHED, (PINNED, "release"): RELEASED,
               (ATTACHED, "release"): RELEASED, (DETACHED, "release"): RELEASED}


def port_mappings(ports: list[PortMapping]) -> list[dict]:
    """The portmap plugin's runtimeConfig.portMappings."""
    return [{"hostPort": p.host_port, "containerPort": p.container_port, "protocol": p.protocol,
             **({"hostIP": p.host_ip} if p.host_ip else {})} for p in ports]


def hold_ports(ports: list[PortMapping]) -> tuple[list[socket.socket], list[PortMapping]]:
    """Bind every published host port (a free one where it is 0); the sockets to keep and the ports as bound.
    AlreadyExists naming the first port that is taken; nothing stays bound then."""
    held: list[socket.socket] = []
    out = []
    try:
        for p in ports:
            fam = socket.AF_INET6 if ":" in p.host_ip else socket.AF_INET
            s = socket.socket(fam, socket.SOCK_STREAM if p.protocol == "tcp" else socket.SOCK_DGRAM)
            held.append(s)
            try:
                s.bind((p.host_ip or "0.0.0.0", p.host_port))
            except OSError as e:
                raise AlreadyExists(f"host port {p.host_ip or '0.0.0.0'}:{p.host_port}/{p.protocol} is already in "
                                    f"use ({e.strerror})") from None
            out.append(PortMapping(p.container_port, s.getsockname()[1], p.protocol, p.host_ip))
    except BaseException:
        for s in held:
            s.close()
        raise
    return held, out


class ShimNetwork:
    def __init__(self, id: str, state_dir: str, cni: Cni, log: logging.LoggerAdapter) -> None:
        self.id = id
        self.pin = os.path.join(state_dir, PIN)
        self.cni = cni
        self.log = log
        self.plan = NetworkPlan()
        self.state = DETACHED
        self.record_path = ""
        self.ip = ""
        self.ports: list[PortMapping] = []
        self._sockets: list[socket.socket] = []

    def _move(self, event: str) -> None:
        nxt = TRANSITIONS.get((self.state, event))
        if nxt is None:
            raise InvalidState(f"network of {self.id}: cannot {event} while {self.state}")
        self.state = nxt

    def netns(self) -> str | None:
        """For the OCI spec: None the host's namespace, "" a new one of runc's (loopback up), else a path."""
        mode = self.plan.mode
        return None if mode == HOST else "" if mode == NONE else self.plan.join if mode == "join" else self.pin

    async def attach(self, plan: NetworkPlan, files_dir: str) -> None:
        """Hold the ports, pin a namespace, run ADD (loopback, then the network's list); undone on failure."""
        self.plan = plan
        if plan.mode != "cni":
            return
        self._sockets, self.ports = hold_ports(plan.ports)
        self.record_path = os.path.join(files_dir, RECORD)
        if plan.path:
            self.cni.path = (plan.path,)
        record = {"container_id": self.id, "network": plan.network, "netns": self.pin, "ifname": IFNAME,
                  "conflist": plan.conflist, "path": plan.path,
                  "runtime_config": {"portMappings": port_mappings(self.ports)},
                  "ports": [p.to_wire() for p in self.ports], "result": None, "ip": ""}
        try:
            _sys.pin_new_netns(self.pin)
            self._move("pin")
            write_json(self.record_path, record)  # before ADD: DEL must be possible whatever happens next
            await self.cni.add(LOOPBACK, self.id, self.pin, "lo")
            result = await self.cni.add(plan.conflist, self.id, self.pin, IFNAME, record["runtime_config"])
            self.ip = result.sandbox_ip()
            write_json(self.record_path, {**record, "result": result.raw, "ip": self.ip})
            self._move("attach")
        except CniError as e:
            await self.release()
            raise RuntimeFailed(f"network {plan.network} for {self.id}: {e}") from e
        except BaseException:
            await self.release()
            raise
        self.log.info("network %s attached: %s, ports %s", plan.network, self.ip,
                      ", ".join(p.render() for p in self.ports) or "none")

    async def release(self) -> None:
        """DEL with the recorded result, unpin, forget the record, free the ports. Safe to call again."""
        if self.state == RELEASED or self.plan.mode != "cni":
            return
        if self.record_path:
            await release_recorded(self.record_path, self.cni, self.log, self.pin if self.state != DETACHED else "")
        _sys.unpin_netns(self.pin)
        for s in self._sockets:
            s.close()
        self._sockets = []
        self._move("release")

    def describe(self) -> dict:
        return {"network": self.plan.network or self.plan.mode, "ip": self.ip,
                "ports": [p.to_wire() for p in self.ports]}


async def release_recorded(record_path: str, cni: Cni, log: logging.Logger | logging.LoggerAdapter,
                           netns: str = "") -> bool:
    """DEL what the record at record_path describes, then remove it; False when there is no record. netns: the
    namespace to name (the pin, or /proc/PID/ns/net of a container still running), "" when it is gone. A failed
    DEL is logged and the record kept, so the next cleanup tries again."""
    try:
        rec = read_json(record_path)
    except (OSError, ValueError):
        return False
    if not isinstance(rec, dict) or not isinstance(rec.get("conflist"), dict):
        os.unlink(record_path)
        return False
    cid = str(rec.get("container_id", ""))
    if netns and not os.path.exists(netns):
        netns = ""
    prev = Result.parse(rec["result"]).raw if isinstance(rec.get("result"), dict) else None
    if isinstance(rec.get("path"), str) and rec["path"]:  # the plugins of its ADD
        cni.path = (rec["path"],)
    try:
        await cni.delete(rec["conflist"], cid, netns, str(rec.get("ifname", IFNAME)), rec.get("runtime_config"),
                         prev)
    except CniError as e:
        log.warning("network DEL for %s failed (record kept for the next cleanup): %s", cid, e)
        return True
    os.unlink(record_path)
    return True
