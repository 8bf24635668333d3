"""CRI in the benchmark: a pod with one container (a sleeping busybox) through `crictl runp` + `crictl create` +
`crictl start`, each step timed from spawn to exit of crictl (a Go binary, the same for both), against Debian's
containerd 1.6 with its CRI plugin. Two kinds of pod, in turn: host network (namespace_options network NODE) and a
CNI network (network POD). The runtimes alternate, the order rotating; medians of each step and of the per-pod
total. Each pod is stopped and removed (`crictl stopp` + `crictl rmp`) after its measurement, untimed; one pod of
each kind per runtime is made and removed first, untimed (warm-up).

Both daemons, the registry and every crictl run in a network namespace of the run (bench/crinet.py). Same images
for both: the stand-ins of the CRI tests (tests/cri_images.py: a busybox-based pause and Debian's busybox, built once
with umoci and cached), pushed with skopeo to a docker-registry on 127.0.0.1 inside the namespace; this module imports
that test module rather than copying it. Both runtimes pull both images with `crictl pull` through their CRI socket
before anything is timed: shimd's [cri] registries_conf (containers-registries.conf v2) marks the registry insecure,
i.e. plain HTTP; containerd's hosts.toml does the same. shimd's [cri] sandbox_image and containerd's sandbox_image
are the same pause reference.

CNI: each runtime's configuration directory holds one conflist of the same shape (bridge + host-local, its leases
under the bench's directory, + portmap), with a bridge name and a subnet of its own; the plugins of /usr/lib/cni.
A CNI pod's address is checked (untimed) to be in its runtime's subnet.

Everything either daemon makes stays under the bench's directory (shimd: root and state; containerd: root, state,
runc root, its CRI plugin's files) but containerd's shim sockets (/run/containerd/s/<hash>, removed by name) and its
cgroups (/k8s.io/<id> in each hierarchy, removed when this run made them).
"""

from __future__ import annotations

import glob
import hashlib
import ipaddress
import json
import os
import subprocess
import time

from containerd import Containerd
from crinet import Images, NetNs
from crireport import KINDS
from systems import Shimd, _stop
from util import REPO, manager_cmd, rotate, run, say, wait_for

from tests.critest_env import containerd_cri_config
from tests.harness import shared_tools

CRICTL = "/usr/local/bin/crictl"
CNI_BIN = "/usr/lib/cni"
PAUSE_NAME, BUSYBOX_NAME = "bench/pause:3.6", "bench/busybox:1.29"
SUBNETS = {"shimd": "10.231.1.0/24", "containerd": "10.231.2.0/24"}  # inside the run's own namespace
SOCK_MAX = 107  # bytes of a unix socket's path (sun_path less its NUL)
CRI_ID = 32  # hex digits of a CRI id of shimd (manager/cri/calls.py's new_id)


def ensure_crictl() -> None:
    """crictl, built (offline, from vendored source) by the shared script of the test tools when missing."""
    if not os.access(CRICTL, os.X_OK):
        say(f"cri: building crictl into {os.path.dirname(CRICTL)}")
        subprocess.run(["bash", os.path.join(shared_tools(), "build-cri-tools.sh")], check=True, timeout=1800,
                       env={**os.environ, "OUT": os.path.dirname(CRICTL)}, stdin=subprocess.DEVNULL)


class CriSide:
    """What both runtimes share: crictl with a client config of our own, run in the namespace; pods made and removed;
    the CNI network (a bridge and a subnet of the runtime's own)."""
    name = ""
    endpoint = ""
    subnet = ""

    def write_crictl_config(self, d: str, netns: NetNs) -> None:
        self.crictl_config = os.path.join(d, "crictl.yaml")
        with open(self.crictl_config, "w") as f:
            f.write(f"runtime-endpoint: unix://{self.endpoint}\nimage-endpoint: unix://{self.endpoint}\n"
                    "timeout: 120\npull-image-on-create: false\n")
        self.wrap = netns.enter()
        self.pods: set[str] = set()

    def crictl(self, *args: str) -> list[str]:
        return [*self.wrap, CRICTL, "--config", self.crictl_config, *args]

    def out(self, *args: str, timeout: float = 120) -> tuple[float, str]:
        """Seconds from spawn to exit of crictl args, and its stdout (stripped); an error raises."""
        cmd = self.crictl(*args)
        t0 = time.perf_counter()
        p = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout, cwd=REPO)
        took = time.perf_counter() - t0
        if p.returncode != 0:
            raise RuntimeError(f"{self.name}: {' '.join(cmd)}: exit {p.returncode}: {p.stderr.strip()[-1500:]}")
        return took, p.stdout.strip()

    def serving(self) -> bool:
        return run(self.crictl("version"), check=False, timeout=30).returncode == 0

    def pull(self, images: Images) -> None:
        for ref in (images.refs[PAUSE_NAME], images.refs[BUSYBOX_NAME]):
            self.out("pull", ref, timeout=300)

    def remove_pod(self, pod: str) -> None:
        self.out("stopp", pod)
        self.out("rmp", pod)
        self.pods.discard(pod)

    def remove_all_pods(self) -> None:
        if self.serving():
            p = run(self.crictl("rmp", "-a", "-f"), check=False, timeout=300)
            if p.returncode != 0:
                say(f"cleanup: {self.name}: crictl rmp -a -f: {(p.stderr or b'').decode().strip()}")


class ShimdCri(Shimd, CriSide):
    """A shimd manager of its own in the namespace (containers without a network unless a pod brings a conflist, as
    in the other figures), serving CRI on <state>/cri.sock with the pause stand-in as its sandbox image."""

    def __init__(self, base: str, started: float, images: Images, netns: NetNs, prefix: str) -> None:
        super().__init__(base, started)  # root and state under base
        longest = os.path.join(self.state, "shims", "f" * CRI_ID, "shim.sock")
        if len(longest.encode()) > SOCK_MAX:
            raise RuntimeError(f"shimd's state dir {self.state} is too long: a shim's socket, {longest}, would take "
                               f"{len(longest.encode())} bytes and at most {SOCK_MAX} fit")
        self.sock_len = len(longest.encode())
        self.endpoint = os.path.join(self.state, "cri.sock")
        self.images, self.netns = images, netns
        self.net = os.path.join(base, "shimd-net.d")
        self.bridge, self.subnet = f"{prefix}s", SUBNETS[self.name]
        netns.conflist(self.net, self.bridge, self.subnet)
        self.registries_conf = os.path.join(base, "shimd-registries.conf")
        with open(self.registries_conf, "w") as f:  # containers-registries.conf(5) v2: our registry is plain HTTP
            f.write(f'[[registry]]\nlocation = "{images.addr}"\ninsecure = true\n')
        self.write_crictl_config(base, netns)

    def start_daemon(self) -> None:
        cri = (f'[cri]\nsandbox_image = "{self.images.refs[PAUSE_NAME]}"\ncni_conf_dir = "{self.net}"\n'
               f'cni_bin_dir = "{CNI_BIN}"\nregistries_conf = "{self.registries_conf}"\n')
        cmd, env = manager_cmd(self.root, self.state, cri)
        env["SHIMD_CRI"] = "1"
        self.proc = subprocess.Popen([*self.netns.enter(), *cmd], cwd=REPO, env=env, stdin=subprocess.DEVNULL,
                                     stdout=self.log, stderr=self.log)

    def cleanup(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.remove_all_pods()
        super().cleanup()  # every container through the API, the manager (and its CRI front), what is left
        with open("/proc/self/mountinfo") as f:
            mounts = [ln.split()[4] for ln in f if ln.split()[4].startswith(self.state + "/")]
        for m in sorted(mounts, key=len, reverse=True):
            say(f"cleanup: umount {m}")
            subprocess.run(["umount", "-l", m], capture_output=True)


class ContainerdCri(Containerd, CriSide):
    """containerd 1.6 with its CRI plugin in the namespace, everything under its directory: the runc root (runc.v2's
    Root option), the CRI plugin's state, a CNI conf dir with its conflist, a hosts dir making our registry plain
    HTTP."""
    name = "containerd"

    def __init__(self, base: str, started: float, images: Images, netns: NetNs, prefix: str) -> None:
        super().__init__(base, "", "k8s.io", started)  # the CRI plugin's namespace; writes a config, replaced here
        self.endpoint = self.sock
        self.netns = netns
        hosts = os.path.join(self.dir, "certs.d", images.addr)
        os.makedirs(hosts)
        with open(os.path.join(hosts, "hosts.toml"), "w") as f:
            f.write(f'server = "http://{images.addr}"\n\n[host."http://{images.addr}"]\n'
                    '  capabilities = ["pull", "resolve"]\n')
        self.bridge, self.subnet = f"{prefix}c", SUBNETS[self.name]
        netns.conflist(os.path.join(self.dir, "net.d"), self.bridge, self.subnet)
        with open(self.config, "w") as f:
            f.write(containerd_cri_config(self.dir, self.sock, images.refs[PAUSE_NAME], os.path.join(self.dir, "net.d"),
                                          os.path.join(self.dir, "certs.d"), self.runc_root, CNI_BIN))
        self.all_pods: set[str] = set()  # every pod made: containerd's shim of each (its socket) is one per pod
        self.write_crictl_config(self.dir, netns)
        self.cgroups_before = k8s_cgroups()

    def start_daemon(self) -> None:
        self.proc = subprocess.Popen([*self.netns.enter(), "containerd", "--config", self.config],
                                     stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log)

    def wait_serving(self, timeout: float = 60) -> None:
        wait_for(self.serving, timeout, "containerd's CRI to serve", 0.05)

    def cleanup(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.remove_all_pods()
            _stop(self.proc)
        self.made |= self.pods | self.all_pods  # their shims' sockets (one shim per pod), removed by name below
        super().cleanup()
        for parent in sorted(k8s_cgroups() - self.cgroups_before):
            for sub in sorted(glob.glob(os.path.join(parent, "*", "")), key=len, reverse=True):
                say(f"cleanup: rmdir {sub}")
                try:
                    os.rmdir(sub)
                except OSError as e:
                    say(f"cleanup: {e}")
            try:
                os.rmdir(parent)
            except OSError as e:
                say(f"cleanup: {e}")

    def shim_socket(self, id: str) -> str:
        path = os.path.join("/", self.sock.lstrip("/"), self.ns, id)
        return os.path.join("/run/containerd/s", hashlib.sha256(path.encode()).hexdigest())


def k8s_cgroups() -> set[str]:
    """containerd CRI's cgroup parents (cgroupfs: /k8s.io in every hierarchy)."""
    return set(glob.glob("/sys/fs/cgroup/*/k8s.io")) | set(glob.glob("/sys/fs/cgroup/k8s.io"))


def _configs(d: str, image: str, tag: str, kind: str) -> tuple[str, str]:
    """A pod config (host network or the CNI network, a log directory) and a container config (busybox `sleep`),
    as files."""
    pod: dict = {"metadata": {"name": f"bench-{tag}", "namespace": "bench", "uid": f"uid-{tag}", "attempt": 0},
                 "log_directory": os.path.join(d, "pod-logs", tag), "linux": {}}
    if kind == "host":
        pod["linux"] = {"security_context": {"namespace_options": {"network": 2}}}
    ctr = {"metadata": {"name": "sleep"}, "image": {"image": image}, "command": ["sleep", "100000"],
           "log_path": "sleep.log", "linux": {}}
    paths = (os.path.join(d, f"pod-{tag}.json"), os.path.join(d, f"ctr-{tag}.json"))
    for path, conf in zip(paths, (pod, ctr), strict=True):
        with open(path, "w") as f:
            json.dump(conf, f)
    return paths


def _check_address(side: CriSide, pod: str) -> None:
    _, ip = side.out("inspectp", "-o", "go-template", "--template", "{{.status.network.ip}}", pod)
    try:
        ok = ipaddress.ip_address(ip) in ipaddress.ip_network(side.subnet)
    except ValueError:
        ok = False
    if not ok:
        raise RuntimeError(f"{side.name}: CNI pod {pod} has the address {ip!r}, not one of {side.subnet}")


def one_pod(side: CriSide, d: str, image: str, tag: str, kind: str) -> dict[str, float]:
    """runp, create, start timed; the container checked running (and a CNI pod's address checked), then the pod
    stopped and removed (untimed)."""
    pod_json, ctr_json = _configs(d, image, tag, kind)
    t: dict[str, float] = {}
    t["runp"], pod = side.out("runp", pod_json)
    side.pods.add(pod)
    if isinstance(side, ContainerdCri):
        side.all_pods.add(pod)
    t["create"], cid = side.out("create", "--no-pull", pod, ctr_json, pod_json)
    t["start"], _ = side.out("start", cid)
    _, state = side.out("inspect", "-o", "go-template", "--template", "{{.status.state}}", cid)
    if state != "CONTAINER_RUNNING":
        raise RuntimeError(f"{side.name}: container {cid} of pod {pod} is {state!r} after start")
    if kind == "cni":
        _check_address(side, pod)
    side.remove_pod(pod)
    return t


def measure(base: str, prefix: str, started: float, n: int, systems: list) -> dict:
    """n pods of each kind per runtime, alternating; every daemon and namespace made is appended to systems (the
    caller cleans them up, last first)."""
    d = os.path.join(base, "cri")
    os.makedirs(d)
    ensure_crictl()
    netns = NetNs(prefix)
    systems.append(netns)
    netns.add()
    say(f"cri: network namespace {netns.ns}; the stand-in images (tests/cri_images.py) on a registry inside it")
    images = Images(d, {PAUSE_NAME: "pause", BUSYBOX_NAME: "busybox"})
    systems.append(images)
    images.start(netns)
    shimd = ShimdCri(d, started, images, netns, prefix)
    systems.append(shimd)
    ctd = ContainerdCri(d, started, images, netns, prefix)
    systems.append(ctd)
    busybox = images.refs[BUSYBOX_NAME]
    for s in (shimd, ctd):
        say(f"cri: starting {s.name}, pulling both images with crictl, a warm-up pod of each kind")
        s.start_daemon()
        s.wait_serving()
        if s is shimd:
            wait_for(s.serving, 60, "shimd's CRI front to serve", 0.05)
        s.pull(images)
        for kind in KINDS:
            one_pod(s, d, busybox, f"{prefix}-{s.name[0]}warm{kind}", kind)
    out: dict = {"n": n, "samples": {k: {s.name: [] for s in (shimd, ctd)} for k in KINDS}}
    say(f"cri: {n} pods of each kind per runtime (runp + create + start), alternating")
    for i in range(n):
        for kind in rotate(list(KINDS), i):
            for s in rotate([shimd, ctd], i):
                out["samples"][kind][s.name].append(one_pod(s, d, busybox, f"{prefix}-{s.name[0]}{kind}{i}", kind))
    out["images"] = (images.refs[PAUSE_NAME], busybox)
    out["nets"] = {s.name: (s.bridge, s.subnet) for s in (shimd, ctd)}
    out["left"] = netns.left()
    out["state"], out["sock_len"] = shimd.state, shimd.sock_len
    return out
