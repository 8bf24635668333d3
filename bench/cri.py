"""CRI in the benchmark: a pod with one container (a sleeping busybox) through `crictl runp` + `crictl create` +
`crictl start`, each step timed from spawn to exit of crictl (a Go binary, the same for both), against Debian's
containerd 1.6 with its CRI plugin; the runtimes alternating, the order rotating, medians of each step and of the
per-pod total. Each pod is stopped and removed (`crictl stopp` + `crictl rmp`) after its measurement, untimed; one
pod per runtime is made and removed first, untimed (warm-up).

Same images for both: the stand-ins of the CRI tests (tests/cri_images.py: a busybox-based pause and Debian's
busybox, built once with umoci and cached), pushed with skopeo to a docker-registry on 127.0.0.1
(tests/imagekit.py's Registry); this module imports those two test modules rather than copying them. Both runtimes
pull both images before anything is timed: shimd with `shimctl pull --tls-verify=false` (its CRI ImageService is
not on main yet), containerd with `crictl pull` (its hosts.toml makes the registry plain HTTP). shimd's
`[cri] sandbox_image` and containerd's `sandbox_image` are the same pause reference.

Network: host network for both (namespace_options network NODE): shimd's CNI pods need the spec field `conflist`,
which main's ContainerSpec does not have yet (it ignores the key): tried, a pod without host network got the
manager's default network (`none` here) and no IP.
Nothing here touches the host's network.

Everything either daemon makes stays under the bench's directory (containerd: root, state, runc root, its CRI
plugin's files) but containerd's shim sockets (/run/containerd/s/<hash>, removed by name) and its cgroups
(/k8s.io/<id> in each hierarchy, removed when this run made them).
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import shutil
import subprocess
import time

from containerd import Containerd
from systems import Shimd, _stop
from util import REPO, manager_cmd, rotate, run, say, wait_for

from tests import cri_images
from tests.harness import shared_tools
from tests.imagekit import Registry

CRICTL = "/usr/local/bin/crictl"
PAUSE_NAME, BUSYBOX_NAME = "bench/pause:3.6", "bench/busybox:1.29"


def ensure_crictl() -> None:
    """crictl, built (offline, from vendored source) by the shared script of the test tools when missing."""
    if not os.access(CRICTL, os.X_OK):
        say(f"cri: building crictl into {os.path.dirname(CRICTL)}")
        subprocess.run(["bash", os.path.join(shared_tools(), "build-cri-tools.sh")], check=True, timeout=1800,
                       env={**os.environ, "OUT": os.path.dirname(CRICTL)}, stdin=subprocess.DEVNULL)


def untracked() -> list[str]:
    """Python files of the project present but not committed (they take part in what is measured)."""
    p = subprocess.run(["git", "-C", REPO, "status", "--porcelain", "--untracked-files=all", "--", "manager",
                        "shimd", "shimproto", "runtime", "shimctl"], capture_output=True, text=True)
    return [ln[3:] for ln in p.stdout.splitlines() if ln.startswith("??") and ln.endswith(".py")]


class Images:
    """The registry holding the two stand-ins; cleanup() stops it (and removes its directory)."""
    name = "registry"

    def __init__(self) -> None:
        layout = cri_images.ensure_images()
        self.registry = Registry()
        addr = self.registry.addr
        cri_images.push_all(layout, addr, [], {PAUSE_NAME: "pause", BUSYBOX_NAME: "busybox"})
        self.pause, self.busybox = f"{addr}/{PAUSE_NAME}", f"{addr}/{BUSYBOX_NAME}"

    def cleanup(self) -> None:
        self.registry.stop()


class CriSide:
    """What both runtimes share: crictl with a client config of our own, pods made and removed."""
    name = ""
    endpoint = ""

    def write_crictl_config(self, d: str) -> None:
        self.crictl_config = os.path.join(d, "crictl.yaml")
        with open(self.crictl_config, "w") as f:
            f.write(f"runtime-endpoint: unix://{self.endpoint}\nimage-endpoint: unix://{self.endpoint}\n"
                    "timeout: 120\npull-image-on-create: false\n")
        self.pods: set[str] = set()

    def crictl(self, *args: str) -> list[str]:
        return [CRICTL, "--config", self.crictl_config, *args]

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
    """A shimd manager of its own (containers without a network by default, as in the other figures), serving CRI
    on <state>/cri.sock with the pause stand-in as its sandbox image."""

    def __init__(self, base: str, started: float, images: Images, prefix: str) -> None:
        super().__init__(base, started)
        # a short state dir: a CRI id is 64 hex digits and <state>/shims/<id>/shim.sock must fit in 107 bytes
        self.state = os.path.join("/run", f"shimd-{prefix}")
        self.sock = os.path.join(self.state, "shimd.sock")
        self.endpoint = os.path.join(self.state, "cri.sock")
        self.images = images
        self.cni = os.path.join(base, "shimd-cni")  # empty: no pod network configured (host-network pods)
        os.makedirs(self.cni)
        self.write_crictl_config(base)

    def start_daemon(self) -> None:
        cri = (f'[cri]\nsandbox_image = "{self.images.pause}"\ncni_conf_dir = "{self.cni}"\n'
               f'registries_conf = "{os.path.join(self.cni, "registries.conf")}"\n')
        cmd, env = manager_cmd(self.root, self.state, cri)
        env["SHIMD_CRI"] = "1"
        self.proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=self.log,
                                     stderr=self.log)

    def pull(self) -> None:
        for ref in (self.images.pause, self.images.busybox):
            run(self.ctl("pull", "-q", "--tls-verify=false", ref), timeout=300)

    def cleanup(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.remove_all_pods()
        super().cleanup()  # every container through the API, the manager (and its CRI front), what is left
        with open("/proc/self/mountinfo") as f:
            mounts = [ln.split()[4] for ln in f if ln.split()[4].startswith(self.state + "/")]
        for m in sorted(mounts, key=len, reverse=True):
            say(f"cleanup: umount {m}")
            subprocess.run(["umount", "-l", m], capture_output=True)
        shutil.rmtree(self.state, ignore_errors=True)


class ContainerdCri(Containerd, CriSide):
    """containerd 1.6 with its CRI plugin, everything under its directory: the runc root (runc.v2's Root option),
    the CRI plugin's state, an empty CNI conf dir, a hosts dir making our registry plain HTTP."""
    name = "containerd"

    def __init__(self, base: str, started: float, images: Images) -> None:
        super().__init__(base, "", "k8s.io", started)  # the CRI plugin's namespace; writes a config, replaced here
        self.endpoint = self.sock
        hosts = os.path.join(self.dir, "certs.d", images.registry.addr)
        os.makedirs(hosts)
        with open(os.path.join(hosts, "hosts.toml"), "w") as f:
            f.write(f'server = "http://{images.registry.addr}"\n\n[host."http://{images.registry.addr}"]\n'
                    '  capabilities = ["pull", "resolve"]\n')
        os.makedirs(os.path.join(self.dir, "net.d"))
        cri = 'plugins."io.containerd.grpc.v1.cri"'
        with open(self.config, "w") as f:
            f.write(f"""version = 2
root = "{self.dir}/root"
state = "{self.dir}/state"
[grpc]
  address = "{self.sock}"
[ttrpc]
  address = "{self.sock}.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "{self.dir}/opt"
[{cri}]
  sandbox_image = "{images.pause}"
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
[{cri}.containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "runc"
[{cri}.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"
[{cri}.containerd.runtimes.runc.options]
  Root = "{self.runc_root}"
[{cri}.cni]
  bin_dir = "/usr/lib/cni"
  conf_dir = "{self.dir}/net.d"
[{cri}.registry]
  config_path = "{self.dir}/certs.d"
""")
        self.images = images
        self.all_pods: set[str] = set()  # every pod made: containerd's shim of each (its socket) is one per pod
        self.write_crictl_config(self.dir)
        self.cgroups_before = k8s_cgroups()

    def wait_serving(self, timeout: float = 60) -> None:
        wait_for(self.serving, timeout, "containerd's CRI to serve", 0.05)

    def pull(self) -> None:
        for ref in (self.images.pause, self.images.busybox):
            self.out("pull", ref, timeout=300)

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


def _configs(d: str, side: CriSide, image: str, tag: str) -> tuple[str, str]:
    """A pod config (host network, a log directory) and a container config (busybox `sleep`), as files."""
    pod = {"metadata": {"name": f"bench-{tag}", "namespace": "bench", "uid": f"uid-{tag}", "attempt": 0},
           "log_directory": os.path.join(d, "pod-logs", tag),
           "linux": {"security_context": {"namespace_options": {"network": 2}}}}
    ctr = {"metadata": {"name": "sleep"}, "image": {"image": image}, "command": ["sleep", "100000"],
           "log_path": "sleep.log", "linux": {}}
    paths = (os.path.join(d, f"pod-{tag}.json"), os.path.join(d, f"ctr-{tag}.json"))
    for path, conf in zip(paths, (pod, ctr), strict=True):
        with open(path, "w") as f:
            json.dump(conf, f)
    return paths


def one_pod(side: CriSide, d: str, image: str, tag: str) -> dict[str, float]:
    """runp, create, start timed; the container checked running, then the pod stopped and removed (untimed)."""
    pod_json, ctr_json = _configs(d, side, image, tag)
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
    side.remove_pod(pod)
    return t


def measure(base: str, prefix: str, started: float, n: int, systems: list) -> dict:
    """n pods per runtime, alternating; every daemon made is appended to systems (the caller cleans them up)."""
    d = os.path.join(base, "cri")
    os.makedirs(d)
    ensure_crictl()
    say("cri: stand-in images (tests/cri_images.py), a registry on 127.0.0.1")
    images = Images()
    systems.append(images)
    shimd = ShimdCri(d, started, images, prefix)
    systems.append(shimd)
    ctd = ContainerdCri(d, started, images)
    systems.append(ctd)
    for s in (shimd, ctd):
        say(f"cri: starting {s.name}, pulling both images")
        s.start_daemon()
        s.wait_serving()
        if s is shimd:
            wait_for(s.serving, 60, "shimd's CRI front to serve", 0.05)
        s.pull()
        one_pod(s, d, images.busybox, f"{prefix}-{s.name[0]}warm")
    out: dict = {"n": n, "samples": {s.name: [] for s in (shimd, ctd)}}
    say(f"cri: {n} pods each (runp + create + start), alternating")
    for i in range(n):
        for s in rotate([shimd, ctd], i):
            out["samples"][s.name].append(one_pod(s, d, images.busybox, f"{prefix}-{s.name[0]}{i}"))
    out["images"] = (images.pause, images.busybox)
    out["untracked"] = untracked()
    return out
