"""docker run's everyday process, security and resource flags, each checked inside a running container: --env-file,
--label with ps --filter label=, --cpus, --cpu-shares, --memory-swap (the cgroup files), --cap-add/--cap-drop,
--privileged, --security-opt no-new-privileges (/proc/self/status), --init (tini as PID 1, reaping), --stop-timeout,
--ulimit and the default open-files limit (ulimit), --device, --shm-size, --sysctl; bad input refused in one line
with nothing made."""

from __future__ import annotations

import json
import os
import time

import pytest

from shimd import ocispec
from shimproto.runflags import ALL_CAPS, RLIM_INFINITY, Ulimit

pytestmark = pytest.mark.timeout(120)
CG = "/sys/fs/cgroup"


def caps_mask(names) -> int:
    return sum(1 << ALL_CAPS.index(n) for n in names)


def status_field(text: str, name: str) -> str:
    return next(line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith(name + ":"))


def test_env_file_comes_before_e_and_labels_filter_ps(env, tmp_path):
    f = tmp_path / "app.env"
    f.write_text("# comment\n\nA=from file\nB=file\n  C=spaced=value\nSHIMD_UNSET_VAR\n")
    c = env.name("lab")
    env.ok("run", "-d", "--name", c, "--env-file", str(f), "-e", "B=flag", "--label", "tier=web", "-l", "x=1",
           "busybox", "sleep", "600")
    out = env.ok("exec", c, "sh", "-c", 'echo "$A|$B|$C|${SHIMD_UNSET_VAR-unset}"').out
    assert out == "from file|flag|spaced=value|unset\n"
    other = env.name("other")
    env.ok("run", "-d", "--name", other, "-l", "tier=db", "busybox", "sleep", "600")
    assert env.ok("ps", "-q", "--filter", "label=tier=web").out.split() == [c]
    assert sorted(env.ok("ps", "-q", "--filter", "label=tier").out.split()) == sorted([c, other])
    assert env.ok("ps", "-q", "--filter", "label=tier", "--filter", "label=x").out.split() == [c]
    assert env.ok("ps", "-q", "--filter", "label=nosuch").out == ""
    r = env.ctl("run", "--env-file", str(tmp_path / "missing.env"), "busybox", "true")
    assert r.rc == 125 and r.err.count("\n") == 1 and "missing.env" in r.err


def test_cpu_and_memory_swap_limits_are_in_the_cgroup_files(env):
    out = env.ok("run", "--rm", "--cpus", "0.5", "--cpu-shares", "512", "--memory", "64m", "--memory-swap", "96m",
                 "busybox", "sh", "-c", f"cat {CG}/cpu/cpu.cfs_quota_us {CG}/cpu/cpu.cfs_period_us "
                 f"{CG}/cpu/cpu.shares {CG}/memory/memory.limit_in_bytes {CG}/memory/memory.memsw.limit_in_bytes"
                 ).out.split()
    assert out == ["50000", "100000", "512", str(64 << 20), str(96 << 20)]
    # no --memory-swap: no swap at all (memory + swap = memory); -1: unlimited swap
    out = env.ok("run", "--rm", "--memory", "64m", "busybox", "cat", f"{CG}/memory/memory.memsw.limit_in_bytes").out
    assert out == f"{64 << 20}\n"
    out = env.ok("run", "--rm", "--memory", "64m", "--memory-swap", "-1", "busybox", "cat",
                 f"{CG}/memory/memory.memsw.limit_in_bytes").out
    assert int(out) > 1 << 60


def test_capabilities_privileged_and_no_new_privileges(env):
    def status(*flags: str) -> str:
        return env.ok("run", "--rm", *flags, "busybox", "cat", "/proc/self/status").out

    default = status()
    eff = int(status_field(default, "CapEff"), 16)
    assert eff == caps_mask(["CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD",
                             "CAP_NET_RAW", "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP",
                             "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE"])
    assert status_field(default, "NoNewPrivs") == "0"  # docker's default
    tweaked = int(status_field(status("--cap-add", "net_admin", "--cap-drop", "CAP_CHOWN"), "CapEff"), 16)
    assert tweaked == (eff | caps_mask(["CAP_NET_ADMIN"])) & ~caps_mask(["CAP_CHOWN"])
    assert int(status_field(status("--cap-drop", "ALL", "--cap-add", "kill"), "CapBnd"), 16) == \
        caps_mask(["CAP_KILL"])
    assert status_field(status("--security-opt", "no-new-privileges"), "NoNewPrivs") == "1"
    # privileged: every capability this kernel has, the host's devices, /sys writable, nothing masked
    with open("/proc/self/status") as f:
        host_bnd = status_field(f.read(), "CapBnd")
    out = env.ok("run", "--rm", "--privileged", "busybox", "sh", "-c",
                 "grep CapEff /proc/self/status; ls /dev/null /dev/loop-control 2>&1; grep ' /sys ' /proc/mounts; "
                 "ip link set lo mtu 1300 && echo net-admin").out
    assert f"CapEff:\t{host_bnd}" in out and "/dev/loop-control\n" in out and " rw," in out
    assert "net-admin" in out
    # --cap-add ALL: every capability the host can give (this one may lack some: CAP_SYS_RESOURCE in a sandbox)
    assert status_field(status("--cap-add", "ALL"), "CapEff") == host_bnd
    # a non-privileged container has no such device and cannot make links
    out = env.ok("run", "--rm", "busybox", "sh", "-c", "ls /dev/loop-control 2>&1; ip link set lo mtu 1300 "
                 "2>&1 || echo refused").out
    assert "No such file" in out and "refused" in out


def test_ulimits_and_the_docker_default_open_files_limit(env):
    # docker's 1048576 (containerd's LimitNOFILE=infinity), unless this host allows fewer
    nofile = min(1048576, ocispec.nofile_ceiling(ocispec.held_caps())[0])
    assert env.ok("run", "--rm", "busybox", "sh", "-c", "ulimit -n; ulimit -Hn").out.split() == [str(nofile)] * 2
    out = env.ok("run", "--rm", "--ulimit", "nofile=512:2048", "--ulimit", "nproc=100", "--ulimit", "core=0",
                 "busybox", "sh", "-c", "ulimit -n; ulimit -Hn; grep -E '^Max (processes|core)' /proc/self/limits"
                 ).out.split()
    assert out[:2] == ["512", "2048"] and out[2:] == ["Max", "core", "file", "size", "0", "0", "bytes",
                                                      "Max", "processes", "100", "100", "processes"]
    assert Ulimit.parse("memlock=-1") == Ulimit("memlock", RLIM_INFINITY, RLIM_INFINITY)  # -1: unlimited
    r = env.ctl("run", "--rm", "--ulimit", f"nofile={nofile + 1}", "busybox", "true")
    assert r.rc == 125 and f"at most {nofile} open files" in r.err and r.err.count("\n") == 1
    assert env.ok("ps", "-a", "-q").out == ""


def test_devices_shm_size_and_sysctls(env):
    out = env.ok("run", "--rm", "--device", "/dev/null:/dev/mynull:rw", "--device", "/dev/zero",
                 "--shm-size", "8m", "--sysctl", "kernel.shmmax=123456789", "--sysctl", "net.ipv4.ip_forward=1",
                 "busybox", "sh", "-c", "stat -c '%t,%T %F' /dev/mynull /dev/zero; echo hi > /dev/mynull && "
                 "echo wrote; grep ' /dev/shm ' /proc/mounts; cat /proc/sys/kernel/shmmax "
                 "/proc/sys/net/ipv4/ip_forward").out.splitlines()
    assert out[:3] == ["1,3 character special file", "1,5 character special file", "wrote"]
    assert "size=8192k" in out[3] and out[4:] == ["123456789", "1"]
    # the device cgroup allows what the flag says (/dev/null is allowed to every container: not that one)
    for access, said in (("r", "refused"), ("rw", "opened")):
        out = env.ok("run", "--rm", "--device", f"/dev/loop-control:/dev/lc:{access}", "busybox", "sh", "-c",
                     "(exec 3>/dev/lc) 2>/dev/null && echo opened || echo refused").out
        assert out == f"{said}\n"
    # the default /dev/shm is docker's 64 MiB
    assert "size=65536k" in env.ok("run", "--rm", "busybox", "grep", " /dev/shm ", "/proc/mounts").out


def test_init_runs_tini_as_pid_1_and_reaps_orphans(env):
    c = env.name("init")
    env.ok("run", "-d", "--init", "--name", c, "busybox", "sh", "-c", "(sleep 0.2 &) ; exec sleep 600")
    time.sleep(1)
    out = env.ok("exec", c, "sh", "-c", "cat /proc/1/cmdline | tr '\\0' ' '; echo; ps -o pid,stat,comm").out
    lines = out.splitlines()
    assert lines[0].startswith("/sbin/docker-init -- sh -c")
    assert not [x for x in lines[1:] if " Z " in f" {x} "], out  # the orphaned sleep was reaped by tini
    t0 = time.monotonic()
    env.ok("stop", c)  # tini passes SIGTERM on: sleep dies of it at once
    assert time.monotonic() - t0 < 5
    assert env.inspect(c)["exit_code"] == 143


def test_stop_timeout_is_the_containers_own_grace(env):
    c = env.name("grace")
    env.ok("run", "-d", "--name", c, "--stop-timeout", "1", "busybox", "sh", "-c",
           "trap '' TERM; while true; do sleep 0.1; done")
    t0 = time.monotonic()
    env.ok("stop", c)  # sh ignores SIGTERM: killed once its own 1 s is over, not the default 10 s
    took = time.monotonic() - t0
    assert 1 <= took < 5 and env.inspect(c)["exit_code"] == 137
    assert json.loads(env.ok("inspect", c).out)[0]["spec"]["stop_timeout"] == 1


@pytest.mark.parametrize("flags,words", [
    (["--cpus", "0"], "must be positive"),
    (["--cpus", f"{(os.cpu_count() or 1) + 1}"], "the CPUs this host has"),
    (["--cpu-shares", "-5"], "between 2 and 262144"),
    (["--memory-swap", "64m"], "needs --memory"),
    (["--memory", "64m", "--memory-swap", "32m"], "must be at least --memory"),
    (["--cap-add", "CAP_NOPE"], "unknown capability"),
    (["--security-opt", "apparmor=unconfined"], "the options are no-new-privileges"),
    (["--ulimit", "nofiles=1"], "use NAME=SOFT[:HARD]"),
    (["--ulimit", "nofile=10:5"], "soft limit is above the hard one"),
    (["--ulimit", "nofile=1", "--ulimit", "nofile=2"], "given twice"),
    (["--device", "/nonexistent-shimd-dev"], "No such file"),
    (["--device", "/etc/passwd"], "is not a device"),
    (["--device", "/dev/null:/dev/x:rwz"], "combination of r, w and m"),
    (["--sysctl", "kernel.hostname=x"], "is not allowed"),
    (["--network", "host", "--sysctl", "net.ipv4.ip_forward=1"], "not allowed with --network host"),
    (["--sysctl", "kernel.shmmax"], "use KEY=VALUE"),
    (["--stop-timeout", "-1"], "between 0 and 3600"),
])
def test_bad_flags_are_one_line_and_nothing_is_made(env, flags, words):
    r = env.ctl("run", "--rm", "--name", env.name("bad"), *flags, "busybox", "true")
    assert r.rc == 125 and r.err.count("\n") == 1 and words in r.err, r.err
    assert env.ok("ps", "-a", "-q").out == ""
