"""Memory merging (memory_merge in the config, on by default): the warm template offers its pages, and so every
shim forked from it, to the kernel's samepage merging, and the manager starts ksmd when it is stopped. Shown here
on real shims: the kernel reports them as merge-any processes whose pages get merged; memory_merge = false makes
shims that are not offered. (How much it saves is a figure of `make bench`, not a test.)"""

from __future__ import annotations

import os

import pytest

from .harness import wait_for

KSM = "/sys/kernel/mm/ksm"


def ksm_stat(pid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/ksm_stat") as f:
        return dict(line.replace(":", " ", 1).split(None, 1) for line in f if line.strip())


pytestmark = pytest.mark.skipif(not os.path.exists(f"{KSM}/run") or not os.path.exists("/proc/self/ksm_stat"),
                                reason="this kernel has no KSM or no per-process merging (Linux 6.4)")


@pytest.fixture
def brisk_ksmd():
    """ksmd at 50x its default pace while the test runs (a full scan covers every process that offered memory,
    which on a busy host is hundreds of shims), the host's pace put back after."""
    path = f"{KSM}/pages_to_scan"
    with open(path) as f:
        before = f.read().strip()
    with open(path, "w") as f:
        f.write("5000")
    yield
    with open(path, "w") as f:
        f.write(before)


def test_shims_forked_from_the_template_are_merged_by_ksmd(env, brisk_ksmd):
    ids = [env.name(f"merge{i}") for i in range(3)]
    for id in ids:
        env.ok("run", "-d", "--name", id, "busybox", "sleep", "1000")
    with open(f"{KSM}/run") as f:
        assert f.read().strip() == "1"  # the manager started ksmd
    shims = [env.inspect(id)["shim_pid"] for id in ids]
    for pid in shims:
        assert ksm_stat(pid)["ksm_merge_any"].strip() == "yes"
    # pages the shims copied from the template and put back as they were are merged again
    wait_for(lambda: all(int(ksm_stat(pid)["ksm_merging_pages"]) > 64 for pid in shims), 90,
             "ksmd to merge pages of every shim")
    env.ok("rm", "-f", *ids)


def test_memory_merge_false_offers_nothing(env):
    cfg = os.path.join(env.base, "config.toml")
    with open(cfg, "w") as f:
        f.write("memory_merge = false\n")
    env.kill_manager()
    env.start_manager("--config", cfg)
    id = env.name("plain")
    env.ok("run", "-d", "--name", id, "busybox", "sleep", "1000")
    assert ksm_stat(env.inspect(id)["shim_pid"])["ksm_merge_any"].strip() == "no"
    env.ok("rm", "-f", id)

