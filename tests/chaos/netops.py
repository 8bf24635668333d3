"""Network faults in the chaos rounds (only when the harness runs its managers inside a network namespace the test
made: nothing touches the host's network). `web` containers on the bridge network publish a free host port that
busybox httpd serves; manager SIGKILLs land during their creates and removals (counted), shims are killed under
them as under any container. After every restart, invariant `network`:

- every running web container's published port answers from the namespace (127.0.0.1:PORT);
- no host-local lease, iptables chain or rule of the CNI plugins, and no network namespace pin (a mount on
  <state>/shims/ID/netns in a live shim) is left for a container that is not listed; no more veths than listed
  containers on the bridge.

The one known leftover (docs/architecture.md: bridge's masquerade chain of a container whose shim died after its
init did, the namespace gone before the DEL) is counted, not a finding.
"""

from __future__ import annotations

import os
import re
import threading
from typing import TYPE_CHECKING

from tests.netns import BASE_CHAINS, container_rules, fetch, leases, veths

if TYPE_CHECKING:
    from tests.chaos.harness import Chaos
    from tests.chaos.invariants import View
    from tests.chaos.ops import Box

NETWORK = "network"
WEB = ["sh", "-c", "mkdir -p /www && echo web > /www/index.html && httpd -p 80 -h /www && exec sleep 999999"]
_ID = re.compile(r'id: \\"([^\\"]+)\\"')
_HOST = re.compile(r"(\d+\.\d+\.\d+\.\d+)/32")


class NetOps:
    """Mixed into Chaos: the web containers and their network's invariant."""

    netns: str
    lock: threading.Lock
    net_ops_active: int

    def net_choices(self) -> list:
        return [self.op_run_web] if self.netns else []

    def _net_op(self, op):  # type: ignore[no-untyped-def]
        """Run op counted as a network operation under way (what kill_manager looks at)."""
        with self.lock:
            self.net_ops_active += 1
        try:
            return op()
        finally:
            with self.lock:
                self.net_ops_active -= 1

    def op_run_web(self) -> Box:
        ch: Chaos = self  # type: ignore[assignment]
        box = ch._new_box("web", None)
        with self.lock:
            ch.stats.web_containers += 1
        return self._net_op(lambda: ch._create(box, WEB, {"network": "bridge", "publish": ["80"]}))


def _rule_ids(lines: list[str]) -> dict[str, set[str]]:
    """Each CNI chain -> the container ids of the rules that name it or sit in it."""
    chains: dict[str, set[str]] = {}
    for line in lines:
        ids = set(_ID.findall(line))
        words = line.split()
        for i, w in enumerate(words):
            if w in ("-j", "-A") and i + 1 < len(words) and words[i + 1].startswith("CNI-") \
                    and words[i + 1] not in BASE_CHAINS:
                chains.setdefault(words[i + 1], set()).update(ids)
    return chains


def _masquerade(line: str) -> bool:
    """A line of bridge's masquerade chain (not of portmap's DNAT/SNAT chains)."""
    return "DN-" not in line and "SN-" not in line and "HOSTPORT" not in line and "dnat" not in line


def check(ch: Chaos, v: View) -> None:
    if not ch.netns:
        return
    listed = set(v.listing)
    on_bridge = [id for id, x in v.listing.items() if x.get("network") == "bridge"]
    for id in on_bridge:
        x, box = v.listing[id], ch.boxes.get(id)
        if x["status"] != "running" or not x.get("ports") or box is None or box.shim_killed:
            continue
        port = x["ports"][0]["host_port"]
        if (fetch(ch.netns, f"http://127.0.0.1:{port}/", timeout=2) or "").strip() != "web":
            v.unsettled.append(f"{NETWORK}: {id}: its published port {port} does not answer")
    for lease in leases(ch.env.base):
        try:
            with open(os.path.join(ch.env.root, "networks", "ipam", lease)) as f:
                owner = f.read().split()[0]
        except (OSError, IndexError):
            continue
        if owner not in listed:
            v.unsettled.append(f"{NETWORK}: lease {lease} left for {owner}, which is not listed")
    lines = container_rules(ch.netns)
    chains = _rule_ids(lines)
    by_ip = {x.get("ip"): id for id, x in v.listing.items() if x.get("ip")}
    for line in lines:
        words = line.split()
        chain = words[0][1:] if line.startswith(":") else words[1]
        ids = set(_ID.findall(line)) | chains.get(chain, set())
        ips = set(_HOST.findall(line))
        if not ids and ips and ips <= set(by_ip):
            continue  # the firewall plugin's rules name a listed container by its address only
        gone = [id for id in ids if id not in listed]
        if not ids:
            v.unsettled.append(f"{NETWORK}: iptables rule of no listed container: {line}")
        elif gone and all(ch.boxes.get(id) is not None and ch.boxes[id].shim_killed for id in gone) \
                and _masquerade(line):
            ch.stats.known_masquerade_left.add(chain)
        elif gone:
            v.unsettled.append(f"{NETWORK}: iptables left for {', '.join(sorted(gone))}: {line}")
    live_on_bridge = [id for id in on_bridge if id in v.shims]
    left = veths(ch.netns)
    if len(left) > len(live_on_bridge):
        v.unsettled.append(f"{NETWORK}: {len(left)} veths for {len(live_on_bridge)} containers with a shim")
    for id, pid in v.shims.items():
        try:
            with open(f"/proc/{pid}/mountinfo") as f:
                pinned = any(line.split()[4] == os.path.join(ch.env.state, "shims", id, "netns") for line in f)
        except OSError:
            continue
        if pinned and id not in listed:
            v.unsettled.append(f"{NETWORK}: {id}: its network namespace is still pinned, but it is not listed")
    ch.count(NETWORK, len(on_bridge) + 1)
