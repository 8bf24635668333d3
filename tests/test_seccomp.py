"""Seccomp by default (issue 14 point 2): containers-common's profile converted for this machine and the container's
capabilities (runtime/seccomp.py), checked inside real containers; --security-opt seccomp=unconfined and
seccomp=PATH; --privileged unconfined; bad profiles refused in one line."""

from __future__ import annotations

import json

import pytest

from runtime import seccomp
from runtime.bundle import DEFAULT_CAPS
from shimd import ocispec

pytestmark = pytest.mark.timeout(120)
GROUP = 'grep "^Seccomp:" /proc/self/status'


def mode(env, *flags: str) -> str:
    return env.ok("run", "--rm", *flags, "busybox", "sh", "-c", GROUP).out.split()[-1]


def test_default_profile_filters_and_unconfined_does_not(env):
    assert mode(env) == "2"
    assert mode(env, "--security-opt", "seccomp=unconfined") == "0"
    assert mode(env, "--privileged") == "0"  # as docker: --privileged is unconfined


def test_no_user_namespace_in_a_default_container(env):
    r = env.ctl("run", "--rm", "busybox", "unshare", "-U", "-r", "true")
    assert r.rc != 0, r
    # with the filter off the same command works: the filter is what refuses it
    env.ok("run", "--rm", "--security-opt", "seccomp=unconfined", "busybox", "unshare", "-U", "-r", "true")
    # CAP_SYS_ADMIN gets the file's rules without docker's namespace ones, as docker does
    env.ok("run", "--rm", "--cap-add", "SYS_ADMIN", "busybox", "unshare", "-U", "-r", "true")


def test_ordinary_workloads_run_under_the_filter(env):
    out = env.ok("run", "--rm", "--network", "none", "busybox", "sh", "-c",
                 "i=0; while [ $i -lt 50 ]; do i=$((i+1)); done; (echo child) & wait; "
                 "ls / >/dev/null && date >/dev/null && echo $i").out
    assert out == "child\n50\n"
    c = env.name("sc")
    env.ok("run", "-d", "--name", c, "busybox", "sleep", "600")
    assert env.ok("exec", c, "sh", "-c", GROUP).out.split()[-1] == "2"  # exec gets the container's filter


def test_seccomp_path_takes_a_profile_file(env, tmp_path):
    # a profile that refuses mkdir with EPERM and allows the rest (OCI form)
    oci = tmp_path / "oci.json"
    oci.write_text(json.dumps({"defaultAction": "SCMP_ACT_ALLOW", "architectures": [seccomp.machine()[1]],
                               "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO",
                                             "errnoRet": 1}]}))
    r = env.ctl("run", "--rm", "--security-opt", f"seccomp={oci}", "busybox", "mkdir", "/x")
    assert r.rc != 0 and "Operation not permitted" in r.err, r
    # podman's form, with a capability condition that the default capabilities do not meet
    podman = tmp_path / "podman.json"
    podman.write_text(json.dumps({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1,
         "excludes": {"caps": ["CAP_SYS_ADMIN"]}}]}))
    r = env.ctl("run", "--rm", "--security-opt", f"seccomp={podman}", "busybox", "mkdir", "/x")
    assert r.rc != 0 and "Operation not permitted" in r.err, r
    env.ok("run", "--rm", "--cap-add", "SYS_ADMIN", "--security-opt", f"seccomp={podman}", "busybox", "mkdir", "/x")


@pytest.mark.parametrize("content, says", [
    (None, "No such file"),
    ("not json", "not a JSON object"),
    ("[1]", "not a JSON object"),
    ('{"defaultAction": "SCMP_ACT_NOPE"}', "defaultAction"),
    ('{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["x"], "action": "SCMP_ACT_ALLOW", '
     '"args": [{"index": 9, "op": "SCMP_CMP_EQ"}]}]}', "index"),
])
def test_bad_seccomp_profile_is_one_line_and_exit_125(env, tmp_path, content, says):
    path = tmp_path / "p.json"
    if content is not None:
        path.write_text(content)
    before = env.ok("ps", "-aq").out
    r = env.ctl("run", "--rm", "--security-opt", f"seccomp={path}", "busybox", "true")
    assert r.rc == 125 and r.err.count("\n") == 1 and says in r.err, r
    assert env.ok("ps", "-aq").out == before


def test_conversion_follows_arch_caps_and_kernel():
    profile = {"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 38, "archMap": [
        {"architecture": "SCMP_ARCH_X86_64", "subArchitectures": ["SCMP_ARCH_X86"]},
        {"architecture": "SCMP_ARCH_AARCH64", "subArchitectures": ["SCMP_ARCH_ARM"]}], "syscalls": [
        {"names": ["read"], "action": "SCMP_ACT_ALLOW", "comment": "", "includes": {}, "excludes": {}},
        {"names": ["arch_prctl"], "action": "SCMP_ACT_ALLOW", "includes": {"arches": ["amd64"]}},
        {"names": ["bpf"], "action": "SCMP_ACT_ALLOW", "includes": {"caps": ["CAP_SYS_ADMIN"]}},
        {"names": ["bpf"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1, "excludes": {"caps": ["CAP_SYS_ADMIN"]}},
        {"names": ["new_call"], "action": "SCMP_ACT_ALLOW", "includes": {"minKernel": "9.1"}},
        {"names": ["unshare", "write"], "action": "SCMP_ACT_ALLOW"}]}
    out = seccomp.to_oci(profile, "x86_64", DEFAULT_CAPS, (6, 1))
    assert out["architectures"] == ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"] and out["defaultErrnoRet"] == 38
    names = [(r["names"], r["action"]) for r in out["syscalls"]]
    assert (["read"], "SCMP_ACT_ALLOW") in names and (["arch_prctl"], "SCMP_ACT_ALLOW") in names
    assert (["bpf"], "SCMP_ACT_ERRNO") in names and (["bpf"], "SCMP_ACT_ALLOW") not in names
    assert not any("new_call" in n for n, _ in names)
    assert (["write"], "SCMP_ACT_ALLOW") in names and (["unshare"], "SCMP_ACT_ERRNO") in names
    arm = seccomp.to_oci(profile, "aarch64", (*DEFAULT_CAPS, "CAP_SYS_ADMIN"), (9, 2))
    names = [(r["names"], r["action"]) for r in arm["syscalls"]]
    assert arm["architectures"] == ["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"]
    assert (["arch_prctl"], "SCMP_ACT_ALLOW") not in names and (["bpf"], "SCMP_ACT_ALLOW") in names
    assert (["new_call"], "SCMP_ACT_ALLOW") in names and (["unshare", "write"], "SCMP_ACT_ALLOW") in names


def test_the_installed_profile_converts():
    name, _, kernel = seccomp.machine()
    out = ocispec.seccomp_filter(False, "", DEFAULT_CAPS)
    assert out is not None and out["defaultAction"] == "SCMP_ACT_ERRNO" and out["architectures"][0] == \
        seccomp.ARCHES[name][0]
    assert ocispec.seccomp_filter(True, "", DEFAULT_CAPS) is None
    assert ocispec.seccomp_filter(False, "unconfined", DEFAULT_CAPS) is None
