"""An offline world for the CRI conformance suite (critest, cri-tools v1.26.1): a network namespace and an IPC
namespace of our own, Debian's docker-registry on 127.0.0.1 inside them holding the stand-in images of
tests/cri_images.py under the exact names critest pulls, a containers-registries.conf (v2) and a containerd hosts
dir mapping registry.k8s.io and gcr.io to that registry, the --test-images-file, and `run_critest` that runs the
suite against a CRI endpoint and reads every spec's result from its junit report.

Repo path scheme: the image registry.k8s.io/e2e-test-images/busybox:1.29-2 is pushed as
127.0.0.1:PORT/registry.k8s.io/e2e-test-images/busybox:1.29-2, so a mirror of registry.k8s.io is
127.0.0.1:PORT/registry.k8s.io (registries.conf) or http://127.0.0.1:PORT/v2/registry.k8s.io with override_path
(containerd's hosts.toml).

Everything runs under `nsenter --net=NS --ipc=IPC` of those namespaces and in pytest's mount namespace:
`ip netns exec` would make a mount namespace of its own, and the mount-propagation specs need critest and the
runtime to see the same mounts. The IPC namespace keeps the segments critest's `ipcmk` makes (HostIpc specs) off
the host. Nothing here touches the host's network. The context manager's exit stops the registry, unmounts what
critest may have left mounted under its temp dir, and removes both namespaces and the dir.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

from tests import cri_images
from tests.harness import shared_tools

CRITEST = "/usr/local/bin/critest"
BUILD_SCRIPT = os.path.join(shared_tools(), "build-cri-tools.sh")
MIRRORED = ("registry.k8s.io", "gcr.io")
ALWAYS_SKIP = ("public image with digest",)  # pins an upstream digest no stand-in can have
_count = itertools.count()


class CritestEnvError(Exception):
    """Setting up the offline world failed: which step, with the tool's output."""


@dataclass
class SpecResult:
    name: str
    status: str  # passed, failed, skipped, pending, panicked, interrupted, timedout
    message: str = ""
    seconds: float = 0.0


@dataclass
class CritestResult:
    """What one critest run did: every spec of the junit report, critest's exit code and output."""
    rc: int
    specs: list[SpecResult]
    output: str
    junit: str

    def with_status(self, *statuses: str) -> list[SpecResult]:
        return [s for s in self.specs if s.status in statuses]

    @property
    def passed(self) -> list[SpecResult]:
        return self.with_status("passed")

    @property
    def failed(self) -> list[SpecResult]:
        return self.with_status("failed", "panicked", "interrupted", "timedout", "aborted")

    @property
    def skipped(self) -> list[SpecResult]:
        return self.with_status("skipped", "pending")

    def summary(self) -> str:
        counts = f"{len(self.passed)} passed, {len(self.failed)} failed, {len(self.skipped)} skipped"
        return f"{counts} (critest rc {self.rc})"

    def failure_table(self, width: int = 300) -> str:
        rows = [f"{s.status:<11} {s.name}\n            {' '.join(s.message.split())[:width]}" for s in self.failed]
        return "\n".join(rows) or "(no failed spec)"


def parse_junit(path: str) -> list[SpecResult]:
    """The specs of a ginkgo v2 junit report. The suite-level nodes ([BeforeSuite] ...) count only when they did
    not pass (a failed one is why every spec went missing)."""
    out = []
    for case in ET.parse(path).getroot().iter("testcase"):
        name = case.get("name", "")
        status = case.get("status", "")
        failure = case.find("failure")
        error = case.find("error")
        skipped = case.find("skipped")
        if not status:
            status = "failed" if failure is not None or error is not None else \
                "skipped" if skipped is not None else "passed"
        node = failure if failure is not None else error if error is not None else skipped
        message = ""
        if node is not None:
            message = (node.get("message") or "") + ("\n" + node.text if node.text else "")
        if name.startswith("[") and not name.startswith("[It]") and status == "passed":
            continue
        out.append(SpecResult(re.sub(r"^\[It\] ", "", name), status, message.strip(), float(case.get("time") or 0)))
    return out


def ensure_critest() -> str:
    """critest's path, built (offline, from vendored source) by the shared script when missing."""
    if not os.access(CRITEST, os.X_OK):
        subprocess.run(["bash", BUILD_SCRIPT], check=True, env={**os.environ, "OUT": os.path.dirname(CRITEST)},
                       timeout=1800)
    return CRITEST


@dataclass
class CritestEnv:
    dir: str  # the temp dir: configs, critest's TMPDIR and reports, anything a test wants to keep there
    netns: str  # the network namespace's name (ip netns) ...
    ipc: str  # ... and the file pinning the IPC namespace
    registry: str = ""  # 127.0.0.1:PORT inside the namespaces
    registries_conf: str = ""  # containers-registries.conf v2 (skopeo: --registries-conf)
    hosts_dir: str = ""  # containerd's config_path: <dir>/<registry>/hosts.toml
    images_file: str = ""  # critest --test-images-file
    procs: list[subprocess.Popen] = field(default_factory=list)

    @property
    def netns_path(self) -> str:
        return f"/run/netns/{self.netns}"

    def enter(self) -> list[str]:
        """The command prefix that runs something in the namespaces (and in our mount namespace)."""
        return ["nsenter", f"--net={self.netns_path}", f"--ipc={self.ipc}"]

    def run(self, *cmd: str, timeout: float = 60, check: bool = False, **kw) -> subprocess.CompletedProcess:
        """Run cmd in the namespaces, output captured as text."""
        return subprocess.run([*self.enter(), *cmd], capture_output=True, text=True, timeout=timeout, check=check,
                              stdin=subprocess.DEVNULL, **kw)

    def popen(self, *cmd: str, log: str | None = None, **kw) -> subprocess.Popen:
        """Start cmd in the namespaces (stdout and stderr to the file log, else discarded); the caller stops it."""
        out = open(log, "ab") if log else subprocess.DEVNULL
        try:
            return subprocess.Popen([*self.enter(), *cmd], stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, **kw)
        finally:
            if log:
                out.close()  # type: ignore[union-attr]

    def http_ok(self, url: str, timeout: float = 2) -> bool:
        """Whether url answers 200 from inside the namespaces."""
        code = ("import sys, urllib.request\ntry:\n"
                "    r = urllib.request.urlopen(sys.argv[1], timeout=float(sys.argv[2]))\n"
                "    sys.exit(0 if r.status == 200 else 1)\nexcept Exception:\n    sys.exit(1)")
        return self.run(sys.executable, "-c", code, url, str(timeout), timeout=timeout + 10).returncode == 0

    def bridge_conflist(self, directory: str, name: str, subnet: str) -> str:
        """Write a CNI conflist (bridge with isGateway, ipMasq and host-local IPAM keeping its leases under
        directory, then portmap) to directory/10-<name>.conflist; returns the path. `name` names the network and
        the bridge (at most 15 characters)."""
        os.makedirs(directory, exist_ok=True)
        conf = {"cniVersion": "1.0.0", "name": name, "plugins": [
            {"type": "bridge", "bridge": name, "isGateway": True, "ipMasq": True, "hairpinMode": True,
             "ipam": {"type": "host-local", "ranges": [[{"subnet": subnet}]], "routes": [{"dst": "0.0.0.0/0"}],
                      "dataDir": os.path.join(directory, "ipam")}},
            {"type": "portmap", "capabilities": {"portMappings": True}}]}
        path = os.path.join(directory, f"10-{name}.conflist")
        with open(path, "w") as f:
            json.dump(conf, f, indent=1)
        return path


def _sh(*cmd: str, timeout: float = 60) -> None:
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    if p.returncode != 0:
        raise CritestEnvError(f"{' '.join(cmd)} -> {p.returncode}: {p.stderr.strip()}")


def _free_port(e: CritestEnv) -> int:
    code = "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])"
    return int(e.run(sys.executable, "-c", code, check=True).stdout)


def _start_registry(e: CritestEnv) -> None:
    d = os.path.join(e.dir, "registry")
    os.makedirs(d)
    e.registry = f"127.0.0.1:{_free_port(e)}"
    config = os.path.join(d, "config.yml")
    with open(config, "w") as f:
        f.write(f"version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {d}/data\n"
                f"  delete:\n    enabled: true\nhttp:\n  addr: {e.registry}\n")
    proc = e.popen("docker-registry", "serve", config, log=os.path.join(d, "registry.log"))
    e.procs.append(proc)
    deadline = time.monotonic() + 30
    while not e.http_ok(f"http://{e.registry}/v2/"):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise CritestEnvError(f"docker-registry on {e.registry} did not come up: "
                                  f"{open(os.path.join(d, 'registry.log'), errors='replace').read()[-2000:]}")
        time.sleep(0.2)


def _write_configs(e: CritestEnv) -> None:
    e.registries_conf = os.path.join(e.dir, "registries.conf")
    with open(e.registries_conf, "w") as f:
        f.write('# critest\'s registries, mirrored by the local registry (repo path scheme: <registry>/<name>)\n'
                'unqualified-search-registries = []\n')
        for reg in MIRRORED:
            f.write(f'\n[[registry]]\nprefix = "{reg}"\nlocation = "{reg}"\n\n'
                    f'[[registry.mirror]]\nlocation = "{e.registry}/{reg}"\ninsecure = true\n')
    e.hosts_dir = os.path.join(e.dir, "certs.d")
    for reg in MIRRORED:
        os.makedirs(os.path.join(e.hosts_dir, reg))
        with open(os.path.join(e.hosts_dir, reg, "hosts.toml"), "w") as f:
            f.write(f'server = "https://{reg}"\n\n[host."http://{e.registry}/v2/{reg}"]\n'
                    f'  capabilities = ["pull", "resolve"]\n  override_path = true\n')
    e.images_file = os.path.join(e.dir, "test-images.yaml")
    with open(e.images_file, "w") as f:
        f.write(f'defaultTestContainerImage: "{cri_images.DEFAULT_IMAGE}"\n'
                f'webServerTestImage: "{cri_images.WEB_SERVER_IMAGE}"\n')


def _unmount_under(path: str) -> None:
    """Lazily unmount whatever is mounted at or below path (deepest first): what a failed critest spec left."""
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4].replace("\\040", " ") for line in f]
    for p in sorted((p for p in points if p == path or p.startswith(path + "/")), key=len, reverse=True):
        subprocess.run(["umount", "-l", p], capture_output=True)


def _teardown(e: CritestEnv) -> None:
    for proc in reversed(e.procs):
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
    _unmount_under(e.dir)
    if os.path.exists(e.ipc):
        subprocess.run(["umount", e.ipc], capture_output=True)
    subprocess.run(["ip", "netns", "del", e.netns], capture_output=True)
    shutil.rmtree(e.dir, ignore_errors=True)


@contextmanager
def critest_env(images: dict[str, str] | None = None) -> Iterator[CritestEnv]:
    """The offline world, images pushed (all of cri_images.IMAGES unless told); removed on exit."""
    layout = cri_images.ensure_images()
    ensure_critest()
    d = tempfile.mkdtemp(prefix="shimd-critest-")
    e = CritestEnv(d, f"shimd-crit-{os.getpid()}-{next(_count)}", os.path.join(d, "ipcns"))
    try:
        _sh("ip", "netns", "add", e.netns)
        _sh("nsenter", f"--net={e.netns_path}", "ip", "link", "set", "lo", "up")
        open(e.ipc, "w").close()
        _sh("unshare", f"--ipc={e.ipc}", "true")
        os.makedirs(os.path.join(d, "tmp"))
        _start_registry(e)
        cri_images.push_all(layout, e.registry, e.enter(), images)
        _write_configs(e)
        yield e
    finally:
        _teardown(e)


def run_critest(endpoint: str, env: CritestEnv, *, focus: str | None = None, skip: Sequence[str] = (),
                timeout: float = 1200, image_endpoint: str | None = None, report: str | None = None,
                extra: Sequence[str] = ()) -> CritestResult:
    """Run critest against endpoint (unix://...) in env's namespaces: the stand-in images file, every spec
    of ALWAYS_SKIP skipped plus skip (substrings, regex-escaped), only focus when given; a junit report
    (at report, default <env.dir>/junit-N.xml) read back into CritestResult."""
    n = next(_count)
    junit = report or os.path.join(env.dir, f"junit-{n}.xml")
    args = [ensure_critest(), f"--runtime-endpoint={endpoint}", f"--image-endpoint={image_endpoint or endpoint}",
            f"--test-images-file={env.images_file}", "--config=/dev/null", "--ginkgo.no-color",
            f"--ginkgo.junit-report={junit}", f"--ginkgo.timeout={int(timeout)}s", *extra]
    for s in (*ALWAYS_SKIP, *skip):
        args.append(f"--ginkgo.skip={re.escape(s)}")
    if focus:
        args.append(f"--ginkgo.focus={focus}")
    tmp = os.path.join(env.dir, "tmp")
    out_path = os.path.join(env.dir, f"critest-{n}.out")
    with open(out_path, "wb") as out:
        p = subprocess.Popen([*env.enter(), *args], stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                             env={**os.environ, "TMPDIR": tmp}, cwd=env.dir)
        try:
            rc = p.wait(timeout + 60)
        except subprocess.TimeoutExpired:
            p.kill()
            rc = p.wait(10)
    output = open(out_path, errors="replace").read()
    specs = parse_junit(junit) if os.path.exists(junit) else []
    if not specs:
        specs = [SpecResult("(critest)", "failed", f"no junit report; output tail:\n{output[-3000:]}")]
    return CritestResult(rc, specs, output, junit)


def containerd_cri_config(d: str, sock: str, sandbox_image: str, conf_dir: str, hosts_dir: str,
                          runc_root: str = "", bin_dir: str = "/usr/lib/cni") -> str:
    """containerd 1.6's config (version 2) for its CRI plugin, as the critest reference run and the benchmark
    (bench/cri.py) start it: root, state and plugin files under d, the socket at sock, CNI from bin_dir with the
    conflists of conf_dir, registries from hosts_dir (hosts.toml per registry), oom_score_adj clamped (no
    CAP_SYS_RESOURCE here), streaming on 127.0.0.1; runc's state under runc_root when given."""
    cri = 'plugins."io.containerd.grpc.v1.cri"'
    runc_opts = f'\n[{cri}.containerd.runtimes.runc.options]\n  Root = "{runc_root}"\n' if runc_root else ""
    return f"""version = 2
root = "{d}/root"
state = "{d}/state"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
                    "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.devmapper"]

[grpc]
  address = "{sock}"

[ttrpc]
  address = "{sock}.ttrpc"

[plugins."io.containerd.internal.v1.opt"]
  path = "{d}/opt"

[{cri}]
  sandbox_image = "{sandbox_image}"
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"

[{cri}.containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "runc"

[{cri}.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"
{runc_opts}
[{cri}.cni]
  bin_dir = "{bin_dir}"
  conf_dir = "{conf_dir}"

[{cri}.registry]
  config_path = "{hosts_dir}"
"""
