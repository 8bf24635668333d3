"""The CRI part's own network world: a network namespace of the run (`ip netns add`, loopback up) in which both
daemons, the registry and crictl run, a docker-registry on 127.0.0.1 inside it holding the stand-in images, and one
bridge conflist per runtime.

Everything enters the namespace with `nsenter --net`, which keeps our mount namespace: `ip netns exec` would remount
/sys and hide the cgroup mounts from the daemons. The registry is inside because the pulls are made by the daemons,
which see only the namespace's 127.0.0.1. Bridges, veths and the plugins' iptables rules all live in the namespace;
the host-local leases in a dataDir under the bench's directory. Nothing here touches the host's network.
cleanup() removes what a failure left (veths, the bridges, the leases) and then the namespace.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time

from systems import _stop
from util import PY, say

from tests import cri_images

REGISTRY_PORT = 5000  # a port of our own namespace: nothing else listens there, the ephemeral range starts above


class NetNs:
    """The namespace (its name carries the run's prefix) and the IPAM directories of the conflists written in it."""
    name = "netns"

    def __init__(self, prefix: str) -> None:
        self.ns = f"{prefix}-cri"
        self.path = f"/run/netns/{self.ns}"
        self.ipam_dirs: list[str] = []

    def add(self) -> None:
        """Make the namespace, loopback up (the registry and the stream servers listen on 127.0.0.1)."""
        subprocess.run(["ip", "netns", "add", self.ns], check=True, capture_output=True)
        self.run("ip", "link", "set", "lo", "up", check=True)

    def enter(self) -> list[str]:
        return ["nsenter", f"--net={self.path}"]

    def run(self, *cmd: str, check: bool = False, timeout: float = 30) -> subprocess.CompletedProcess:
        p = subprocess.run([*self.enter(), *cmd], capture_output=True, text=True, timeout=timeout,
                           stdin=subprocess.DEVNULL)
        if check and p.returncode != 0:
            raise RuntimeError(f"netns {self.ns}: {' '.join(cmd)}: exit {p.returncode}: {p.stderr.strip()}")
        return p

    def links(self, kind: str) -> list[str]:
        out = self.run("ip", "-o", "link", "show", "type", kind).stdout.splitlines()
        return [ln.split(":")[1].strip().split("@")[0] for ln in out if ln.strip()]

    def conflist(self, directory: str, name: str, subnet: str) -> str:
        """A CNI conflist in directory (bridge `name` as gateway with masquerading, host-local IPAM keeping its leases
        in directory/ipam, then portmap), as the CRI tests write it; its path. name: at most 15 characters."""
        os.makedirs(directory, exist_ok=True)
        ipam = os.path.join(directory, "ipam")
        self.ipam_dirs.append(ipam)
        conf = {"cniVersion": "1.0.0", "name": name, "plugins": [
            {"type": "bridge", "bridge": name, "isGateway": True, "ipMasq": True, "hairpinMode": True,
             "ipam": {"type": "host-local", "ranges": [[{"subnet": subnet}]], "routes": [{"dst": "0.0.0.0/0"}],
                      "dataDir": ipam}},
            {"type": "portmap", "capabilities": {"portMappings": True}}]}
        path = os.path.join(directory, f"10-{name}.conflist")
        with open(path, "w") as f:
            json.dump(conf, f, indent=1)
        return path

    def leases(self) -> list[str]:
        """host-local's leases still held (a file per address, beside its lock and last_reserved_ip files)."""
        out = []
        for ipam in self.ipam_dirs:
            for net in sorted(os.listdir(ipam)) if os.path.isdir(ipam) else []:
                out += [f"{net}/{n}" for n in sorted(os.listdir(os.path.join(ipam, net)))
                        if n != "lock" and not n.startswith("last_reserved_ip")]
        return out

    def left(self) -> list[str]:
        """What the pods left in the namespace once all were removed: veths and leases."""
        return [f"veth {v}" for v in self.links("veth")] + [f"lease {x}" for x in self.leases()]

    def cleanup(self) -> None:
        if os.path.exists(self.path):
            for v in self.links("veth"):
                say(f"cleanup: ip link del {v} (a veth left in {self.ns})")
                self.run("ip", "link", "del", v)
            for b in self.links("bridge"):
                self.run("ip", "link", "del", b)
        for x in self.leases():
            say(f"cleanup: lease left: {x}")
        for ipam in self.ipam_dirs:
            shutil.rmtree(ipam, ignore_errors=True)
        if os.path.exists(self.path):
            p = subprocess.run(["ip", "netns", "del", self.ns], capture_output=True, text=True)
            if os.path.exists(self.path):
                say(f"cleanup: LEFT BEHIND: network namespace {self.ns}: {p.stderr.strip()}")


class Images:
    """docker-registry on 127.0.0.1 inside the namespace, holding the two stand-ins (pushed by skopeo from inside);
    cleanup() stops it. Its directory is under the bench's, so a registry a failure left is swept with it."""
    name = "registry"

    def __init__(self, d: str, names: dict[str, str]) -> None:
        self.dir = os.path.join(d, "registry")
        self.addr = f"127.0.0.1:{REGISTRY_PORT}"
        self.names = names
        self.refs = {name: f"{self.addr}/{name}" for name in names}
        self.proc: subprocess.Popen | None = None

    def start(self, netns: NetNs) -> None:
        """The registry started in netns, both images pushed to it."""
        layout = cri_images.ensure_images()
        os.makedirs(self.dir)
        config = os.path.join(self.dir, "config.yml")
        with open(config, "w") as f:
            f.write(f"version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {self.dir}/data"
                    f"\nhttp:\n  addr: {self.addr}\n")
        self.log = os.path.join(self.dir, "registry.log")
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([*netns.enter(), "docker-registry", "serve", config], stdout=log,
                                         stderr=log, stdin=subprocess.DEVNULL)
        self._wait_up(netns)
        cri_images.push_all(layout, self.addr, netns.enter(), self.names)

    def _wait_up(self, netns: NetNs, timeout: float = 30) -> None:
        probe = ("import sys, urllib.request\ntry:\n    urllib.request.urlopen(sys.argv[1], timeout=2)\n"
                 "except Exception:\n    sys.exit(1)")
        deadline = time.monotonic() + timeout
        assert self.proc is not None
        while netns.run(PY, "-c", probe, f"http://{self.addr}/v2/").returncode != 0:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"docker-registry on {self.addr} in {netns.ns} did not come up: "
                                   f"{open(self.log, errors='replace').read()[-1500:]}")
            time.sleep(0.2)

    def cleanup(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            _stop(self.proc)
