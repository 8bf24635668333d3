"""The critest harness proven against a real CRI runtime that exists today: Debian's containerd 1.6, started in
the harness's namespaces with a root, state, socket, CNI config and registry hosts dir of its own. Not part of the
normal suite (it proves the harness and the stand-in images, not shimd): run it with

    SHIMD_CRITEST_CONTAINERD=1 .venv/bin/python -m pytest -q -s tests/test_critest_containerd.py

Afterwards containerd, its shims and every container are gone (checked), and so are its mounts."""

from __future__ import annotations

import glob
import os
import shutil
import signal
import subprocess
import time

import psutil
import pytest

from tests.critest_env import CritestEnv, containerd_cri_config, critest_env, run_critest

pytestmark = [
    pytest.mark.skipif(os.environ.get("SHIMD_CRITEST_CONTAINERD") != "1",
                       reason="proves the critest harness against containerd: set SHIMD_CRITEST_CONTAINERD=1"),
    pytest.mark.timeout(1800),
]

CRICTL = "/usr/local/bin/crictl"


def containerd_config(e: CritestEnv, d: str) -> str:
    """containerd 1.6's config (version 2): everything under d, the CRI plugin on the harness's mirrors (hosts
    dir), CNI from /usr/lib/cni with a bridge conflist of its own, oom_score_adj clamped (no CAP_SYS_RESOURCE)."""
    e.bridge_conflist(os.path.join(d, "net.d"), f"crictd{os.getpid() % 10000}", "10.211.0.0/24")
    text = containerd_cri_config(d, f"{d}/containerd.sock", "registry.k8s.io/pause:3.6", f"{d}/net.d",
                                 e.hosts_dir)
    path = os.path.join(d, "config.toml")
    with open(path, "w") as f:
        f.write(text)
    return path


def ours(d: str) -> list[psutil.Process]:
    """containerd and its shims (their command lines name d), and every process below them."""
    out: dict[int, psutil.Process] = {}
    for p in psutil.process_iter(["cmdline"]):
        if d in " ".join(p.info["cmdline"] or []):
            out[p.pid] = p
            try:
                out.update({c.pid: c for c in p.children(recursive=True)})
            except psutil.Error:
                pass
    return list(out.values())


def mounts_under(d: str) -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return [m for m in (line.split()[4] for line in f) if m.startswith(d + "/")]


def k8s_cgroups() -> set[str]:
    """containerd's cgroup parents (cgroupfs driver: /k8s.io in every hierarchy)."""
    return set(glob.glob("/sys/fs/cgroup/*/k8s.io")) | set(glob.glob("/sys/fs/cgroup/k8s.io"))


def stop_containerd(e: CritestEnv, proc: subprocess.Popen, d: str, sock: str, cgroups_before: set[str]) -> list[str]:
    """Remove every pod through CRI, stop containerd, then kill what survived; returns what had survived. The
    /k8s.io cgroup parents made during the run are removed (a container cgroup still in one is reported)."""
    left: list[str] = []
    if proc.poll() is None:
        r = e.run(CRICTL, f"--runtime-endpoint=unix://{sock}", "rmp", "-a", "-f", timeout=120)
        if r.returncode != 0:
            left.append(f"crictl rmp -af: {r.stderr.strip()}")
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    deadline = time.monotonic() + 10
    while (procs := ours(d)) and time.monotonic() < deadline:
        time.sleep(0.2)
    for p in procs:
        try:
            left.append(f"process left: {p.pid} {' '.join(p.cmdline())[:150]}")
            p.kill()
        except psutil.Error:
            pass
    for m in sorted(mounts_under(d), key=len, reverse=True):
        left.append(f"mount left: {m}")
        subprocess.run(["umount", "-l", m], capture_output=True)
    for parent in sorted(k8s_cgroups() - cgroups_before):
        for sub in sorted(glob.glob(os.path.join(parent, "*", "")), key=len, reverse=True):
            left.append(f"cgroup left: {sub}")
            try:
                os.rmdir(sub)
            except OSError:
                pass
        try:
            os.rmdir(parent)
        except OSError as err:
            left.append(f"cgroup parent not removed: {parent}: {err}")
    return left


@pytest.mark.skipif(not shutil.which("containerd"), reason="containerd is not installed (apt-get install containerd)")
def test_containerd_passes_critest_with_the_stand_in_images():
    with critest_env() as e:
        d = os.path.join(e.dir, "containerd")
        os.makedirs(d)
        sock = os.path.join(d, "containerd.sock")
        log = os.path.join(d, "containerd.log")
        cgroups_before = k8s_cgroups()
        proc = e.popen("containerd", "--config", containerd_config(e, d), log=log)
        left: list[str] = []
        try:
            deadline = time.monotonic() + 30
            while e.run(CRICTL, f"--runtime-endpoint=unix://{sock}", "info", timeout=20).returncode != 0:
                assert proc.poll() is None and time.monotonic() < deadline, \
                    f"containerd did not serve CRI: {open(log, errors='replace').read()[-3000:]}"
                time.sleep(0.5)
            result = run_critest(f"unix://{sock}", e, timeout=1500)
        finally:
            left = stop_containerd(e, proc, d, sock, cgroups_before)
        print(f"\ncontainerd: {result.summary()}\n{result.failure_table()}")
        print("skipped:\n  " + "\n  ".join(s.name for s in result.skipped))
        assert not left, "containerd left behind:\n  " + "\n  ".join(left)
        assert not result.failed, f"{result.summary()}\n{result.failure_table()}"
        assert len(result.passed) >= 70, result.summary()
