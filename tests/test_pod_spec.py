"""The spec fields a pod's containers need (shimproto/pod.py), sent over the raw API as a CRI server sends them and
checked in real runc containers of the built-in busybox: shared and host namespaces, masked and read-only paths,
supplementary groups, oom_score_adj, a log at a client's path, resolv.conf's search and options, the files of a
network that is joined, ipc and net sysctls, mount propagation, and the POD column of ps."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess

import pytest

from shimproto.client import Client
from shimproto.errors import InvalidArgument, InvalidState, ShimdError
from tests.harness import spares_of, wait_for

SLEEP = ["sleep", "1000"]
NS = "for k in ipc pid uts; do readlink /proc/self/ns/$k; done"  # busybox readlink takes one file


def create(env, args: list[str] = SLEEP, start: bool = True, **spec) -> dict:
    c = Client(env.sock, timeout=60)
    try:
        return c.call("create", {"spec": {"image": "busybox", "args": args, **spec}, "start": start})  # type: ignore
    finally:
        c.close()


def sh(env, id: str, script: str) -> str:
    return env.ok("exec", id, "sh", "-c", script).out


def config(info: dict) -> dict:
    with open(os.path.join(info["bundle"], "config.json")) as f:
        return json.load(f)


def test_a_container_joins_the_ipc_pid_and_uts_namespaces_of_a_running_one(env):
    a = create(env, hostname="podhost")["id"]
    b = create(env, ipc=f"container:{a}", pid=f"container:{a}", uts=f"container:{a}")["id"]
    ns = NS
    assert sh(env, a, ns) == sh(env, b, ns)
    assert sh(env, b, "hostname").strip() == "podhost"
    assert sh(env, b, "cat /etc/hostname").strip() == "podhost"
    assert "sleep 1000" in sh(env, b, "ps -o pid,args")  # a's init, seen from b
    assert "hostname" not in config(env.inspect(b))  # runc sets none outside a uts namespace of its own
    own = create(env)["id"]
    assert sh(env, own, ns) != sh(env, a, ns)


def test_joining_a_container_that_does_not_run_is_refused(env):
    stopped = create(env, start=False)["id"]
    for kind in ("ipc", "pid", "uts"):
        with pytest.raises(InvalidState, match=f"{kind} namespace of container {stopped}: it is not running"):
            create(env, **{kind: f"container:{stopped}"})


def test_host_namespaces_are_the_hosts(env):
    id = create(env, ipc="host", pid="host", uts="host")["id"]
    ours = [os.readlink(f"/proc/self/ns/{k}") for k in ("ipc", "pid", "uts")]
    assert sh(env, id, NS).split() == ours
    assert sh(env, id, "hostname").strip() == socket.gethostname()
    assert sh(env, id, "cat /etc/hostname").strip() == socket.gethostname()
    pid = env.inspect(id)["pid"]
    assert f"{pid} " in sh(env, id, "ps -o pid,args")  # the host's pid of its init, as the host sees it
    env.ok("rm", "-f", id)


def test_namespace_and_hostname_fields_are_checked(env):
    for spec, text in (({"ipc": "shared"}, "invalid ipc"), ({"pid": "container:"}, "invalid pid"),
                       ({"uts": "host", "hostname": "x"}, "hostname cannot be set with uts")):
        with pytest.raises(InvalidArgument, match=text):
            create(env, **spec)


def test_masked_and_readonly_paths_replace_the_defaults(env):
    default = create(env)["id"]
    assert sh(env, default, "wc -c < /proc/timer_list").strip() == "0"
    assert sh(env, default, "grep ' /proc/sys ' /proc/self/mountinfo | grep -c ' ro,'").strip() == "1"
    id = create(env, masked_paths=["/proc/meminfo"], readonly_paths=[])["id"]
    assert sh(env, id, "wc -c < /proc/meminfo").strip() == "0"
    assert int(sh(env, id, "wc -c < /proc/timer_list")) > 0  # no longer masked
    assert sh(env, id, "grep -c ' /proc/sys ' /proc/self/mountinfo || true").strip() == "0"
    assert "MemTotal" in sh(env, default, "cat /proc/meminfo")
    cfg = config(env.inspect(id))["linux"]
    assert cfg["maskedPaths"] == ["/proc/meminfo"] and cfg["readonlyPaths"] == []
    with pytest.raises(InvalidArgument, match="masked_paths entry 'proc/x'"):
        create(env, masked_paths=["proc/x"])


def test_group_add_adds_gids_and_group_names_to_the_users_own_groups(env, tmp_path):
    id = create(env, user="nobody", group_add=["tty", "1234"])["id"]
    assert sh(env, id, "id -G").split() == ["65534", "5", "1234"]
    root = create(env, group_add=["50000"])["id"]
    assert sh(env, root, "id -G").split() == ["0", "50000"]
    # a user whose /etc/group names it in a group keeps that group, then the added ones (docker's --group-add)
    rootfs = str(tmp_path / "rootfs")
    shutil.copytree(os.path.join(env.root, "images", "busybox", "rootfs"), rootfs, symlinks=True)
    with open(os.path.join(rootfs, "etc", "passwd"), "a") as f:
        f.write("app:x:1000:1000::/:/bin/sh\n")
    with open(os.path.join(rootfs, "etc", "group"), "a") as f:
        f.write("app:x:1000:\nstaff:x:50:app\n")
    c = create(env, image="", rootfs=rootfs, args=SLEEP, user="1000", group_add=["1234", "50000"])["id"]
    assert sh(env, c, "id -G").split() == ["1000", "50", "1234", "50000"]
    with pytest.raises(InvalidArgument, match="group_add: unable to find group 'nosuch'"):
        create(env, group_add=["nosuch"])
    with pytest.raises(InvalidArgument, match="invalid group_add 'a b'"):
        create(env, group_add=["a b"])


def test_oom_score_adj_is_applied_and_clamped_to_what_the_shim_may_set(env):
    id = create(env, oom_score_adj=500)["id"]
    assert sh(env, id, "cat /proc/1/oom_score_adj").strip() == "500"
    info = create(env, oom_score_adj=-998)
    with open(f"/proc/{info['shim_pid']}/oom_score_adj") as f:
        shim = int(f.read())
    with open("/proc/self/status") as f:
        may_lower = int(next(x.split()[1] for x in f if x.startswith("CapEff:")), 16) >> 24 & 1  # SYS_RESOURCE
    want = -998 if may_lower else max(-998, shim)
    assert sh(env, info["id"], "cat /proc/1/oom_score_adj").strip() == str(want)
    with pytest.raises(InvalidArgument, match="invalid oom_score_adj 1001"):
        create(env, oom_score_adj=1001)


def test_a_log_path_is_written_read_shown_not_rotated_and_kept_on_delete(env, tmp_path):
    path = str(tmp_path / "pod" / "c.log")
    with pytest.raises(InvalidArgument, match=f"directory {tmp_path / 'pod'} does not exist"):
        create(env, args=["echo", "x"], log_path=path)
    os.mkdir(tmp_path / "pod")
    info = create(env, args=["sh", "-c", "echo hello-log; sleep 1000"], log_path=path)
    assert info["log_path"] == path and info["spec"]["log_max_size"] == 0
    wait_for(lambda: os.path.exists(path) and b"hello-log" in open(path, "rb").read(), 10, "the log file")
    with open(path) as f:
        assert f.read().split(" ", 1)[1] == "stdout F hello-log\n"  # the CRI format
    assert env.ok("logs", info["id"]).out == "hello-log\n"
    os.rename(path, path + ".1")  # kubelet's rotation: rename, then reopen_log
    c = Client(env.sock, timeout=10)
    try:
        c.call("reopen_log", {"id": info["id"]})
    finally:
        c.close()
    env.ok("exec", info["id"], "sh", "-c", "echo again > /proc/1/fd/1")
    wait_for(lambda: os.path.exists(path) and b"again" in open(path, "rb").read(), 10, "the reopened log")
    env.ok("rm", "-f", info["id"])
    assert os.path.exists(path) and os.path.exists(path + ".1")  # the client's files, not ours to remove
    assert not os.path.exists(os.path.join(env.root, "containers", info["id"]))
    with pytest.raises(InvalidArgument, match="invalid log_path 'rel/c.log'"):
        create(env, log_path="rel/c.log")


def test_dns_search_and_options_replace_those_lines_and_keep_the_hosts_nameservers(env):
    plain = sh(env, create(env)["id"], "cat /etc/resolv.conf")
    text = sh(env, create(env, dns_search=["a.example", "b.example"], dns_options=["ndots:5", "timeout:2"])["id"],
              "cat /etc/resolv.conf")
    lines = text.splitlines()
    assert "search a.example b.example" in lines and "options ndots:5 timeout:2" in lines
    assert [x for x in lines if x.startswith("nameserver")] == [x for x in plain.splitlines()
                                                                  if x.startswith("nameserver")]
    assert sum(x.startswith(("search", "domain")) for x in lines) == 1
    both = sh(env, create(env, dns=["192.0.2.53"], dns_search=["c.example"])["id"], "cat /etc/resolv.conf")
    assert [x for x in both.splitlines() if x.startswith(("nameserver", "search"))] == \
        ["nameserver 192.0.2.53", "search c.example"]
    with pytest.raises(InvalidArgument, match="invalid dns_options entry 'a b'"):
        create(env, dns_options=["a b"])


def test_a_container_on_anothers_network_shares_its_etc_files_unless_it_asks_for_its_own(env):
    pod = create(env, hostname="sandbox", network="none", dns_search=["pod.example"])["id"]
    joined = create(env, network=f"container:{pod}")["id"]
    for name in ("hostname", "hosts", "resolv.conf"):
        assert sh(env, joined, f"cat /etc/{name}") == sh(env, pod, f"cat /etc/{name}"), name
    assert sh(env, joined, "hostname").strip() == "sandbox"
    sh(env, pod, "echo 192.0.2.7 added >> /etc/hosts")  # one file: a change is seen by both
    assert "192.0.2.7 added" in sh(env, joined, "cat /etc/hosts")
    own = create(env, network=f"container:{pod}", dns_options=["ndots:2"])["id"]
    assert "options ndots:2" in sh(env, own, "cat /etc/resolv.conf")
    assert "pod.example" not in sh(env, own, "cat /etc/resolv.conf")  # the host's, with its own options
    assert sh(env, own, "cat /etc/hosts") == sh(env, pod, "cat /etc/hosts")


def test_net_sysctls_with_a_joined_network_and_ipc_sysctls_unless_ipc_is_the_hosts(env):
    pod = create(env, network="none", sysctls={"kernel.shm_rmid_forced": "1"})["id"]
    joined = create(env, network=f"container:{pod}", ipc=f"container:{pod}",
                    sysctls={"net.ipv4.ip_unprivileged_port_start": "81", "kernel.msgmax": "4096"})["id"]
    assert sh(env, pod, "cat /proc/sys/net/ipv4/ip_unprivileged_port_start").strip() == "81"  # one namespace
    assert sh(env, joined, "cat /proc/sys/kernel/msgmax /proc/sys/kernel/shm_rmid_forced").split() == ["4096", "1"]
    with pytest.raises(InvalidArgument, match="kernel.shmmax is not allowed with ipc host"):
        create(env, ipc="host", sysctls={"kernel.shmmax": "4096"})
    with pytest.raises(InvalidArgument, match="not allowed with --network host"):
        create(env, network="host", sysctls={"net.ipv4.ip_forward": "1"})


def test_volume_propagation_reaches_the_container_and_sets_the_roots(env, shared_root, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    slave = create(env, volumes=[f"{src}:/data:ro,rslave"])
    private = create(env, volumes=[f"{src}:/data"])
    shared = create(env, volumes=[f"{src}:/data:rshared"])
    assert config(slave)["linux"]["rootfsPropagation"] == "rslave"
    assert config(shared)["linux"]["rootfsPropagation"] == "rshared"
    assert "rootfsPropagation" not in config(private)["linux"]
    assert "shared:" in sh(env, shared["id"], "grep ' /data ' /proc/self/mountinfo")
    (src / "sub").mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "late", str(src / "sub")], check=True)
    try:
        wait_for(lambda: "late" in sh(env, slave["id"], "grep ' /data/sub ' /proc/self/mountinfo || true"), 5,
                 "the host's new mount in the rslave container")
        assert "late" in sh(env, shared["id"], "grep ' /data/sub ' /proc/self/mountinfo || true")
        assert sh(env, private["id"], "grep -c ' /data/sub ' /proc/self/mountinfo || true").strip() == "0"
        assert sh(env, slave["id"], "touch /data/x 2>&1 || echo refused").strip().endswith("refused")
    finally:
        subprocess.run(["umount", "-l", str(src / "sub")], check=False)
    with pytest.raises(InvalidArgument, match="one propagation"):
        create(env, volumes=[f"{src}:/data:rshared,rslave"])


def test_a_volume_that_is_a_shared_mount_of_its_own_propagates_with_a_private_root(env, tmp_path):
    """/ private (no shared_root, as on this host): the source is a mount of its own, bound and made rshared after
    the manager and its spare shim started, as critest and kubelet make it. rslave: the host's later mounts reach
    the container; rshared: the container's mounts reach the host too."""
    create(env)  # the template is warm and makes a spare shim, whose mount namespace must not predate the source
    wait_for(lambda: [p for p in spares_of(env) if p.ppid() != env.manager_pid()], 10, "a detached spare shim")
    src = str(tmp_path / "vol")
    os.mkdir(src)
    mounted: list[str] = []

    def mount(*args: str) -> None:
        subprocess.run(["mount", *args], check=True)
        mounted.append(args[-1])

    try:
        mount("--bind", src, src)
        subprocess.run(["mount", "--make-rshared", src], check=True)
        slave = create(env, volumes=[f"{src}:{src}:rslave"], privileged=True)["id"]
        shared = create(env, volumes=[f"{src}:{src}:rshared"], privileged=True)["id"]
        os.mkdir(f"{src}/late")
        mount("-t", "tmpfs", "late", f"{src}/late")
        for id in (slave, shared):
            wait_for(lambda id=id: "late" in sh(env, id, f"grep ' {src}/late ' /proc/self/mountinfo || true"), 5,
                     f"the host's new mount in {id}")
        for id, name in ((shared, "back"), (slave, "back2")):
            sh(env, id, f"mkdir -p {src}/{name} && mount --bind /etc {src}/{name}")
            mounted.append(f"{src}/{name}")
        assert "hostname" in os.listdir(f"{src}/back"), "the rshared container's mount did not reach the host"
        assert os.listdir(f"{src}/back2") == [], "the rslave container's mount reached the host"
    finally:
        for path in reversed(mounted):
            subprocess.run(["umount", "-l", path], check=False)


def test_ps_shows_a_pod_column_only_for_pod_containers(env):
    create(env, id=env.name("plain"))
    assert "POD" not in env.ok("ps").out
    create(env, id=env.name("inpod"), labels={"io.kubernetes.pod.namespace": "default",
                                               "io.kubernetes.pod.name": "web-0"})
    lines = env.ok("ps").out.splitlines()
    assert lines[0].split()[-1] == "POD"
    assert next(x for x in lines if x.startswith(env.name("inpod"))).split()[-1] == "default/web-0"
    assert next(x for x in lines if x.startswith(env.name("plain"))).split()[-1] == "-"


def test_a_conflist_given_directly_attaches_the_container_and_publishes_on_a_host_ip(nenv):
    from tests.netns import fetch, leases, veths

    ipam = os.path.join(nenv.base, "pod-ipam")
    conflist = {"cniVersion": "1.0.0", "name": "podnet", "plugins": [
        {"type": "bridge", "bridge": "podbr0", "isGateway": True, "ipMasq": True, "hairpinMode": True,
         "ipam": {"type": "host-local", "dataDir": ipam, "routes": [{"dst": "0.0.0.0/0"}],
                  "ranges": [[{"subnet": "10.77.0.0/24", "gateway": "10.77.0.1"}]]}},
        {"type": "portmap", "capabilities": {"portMappings": True}, "snat": True}]}
    info = create(nenv, args=["sh", "-c", "echo pod-web > /www/index.html && exec httpd -f -p 80 -h /www"],
                  tmpfs=["/www"], conflist=conflist, publish=["127.0.0.1:12000:80"])
    assert info["ip"].startswith("10.77.0.") and info["network"] == "podnet"
    assert info["ports"] == [{"container_port": 80, "host_port": 12000, "protocol": "tcp", "host_ip": "127.0.0.1"}]
    wait_for(lambda: (fetch(nenv.netns, "http://127.0.0.1:12000/") or "").strip() == "pod-web", 10,
             "the port published on 127.0.0.1")
    assert (fetch(nenv.netns, f"http://{info['ip']}/") or "").strip() == "pod-web"
    single = {"cniVersion": "1.0.0", "name": "single", "type": "bridge", "bridge": "podbr1",
              "ipam": {"type": "host-local", "dataDir": ipam, "ranges": [[{"subnet": "10.78.0.0/24"}]]}}
    bin_dir, empty = os.path.join(nenv.base, "cni-bin"), os.path.join(nenv.base, "cni-empty")
    os.makedirs(bin_dir)
    os.makedirs(empty)
    for name in os.listdir("/usr/lib/cni"):  # the plugins, from a directory of the CRI's cni_bin_dir kind
        os.symlink(os.path.join("/usr/lib/cni", name), os.path.join(bin_dir, name))
    one = create(nenv, conflist=single, cni_bin_dir=bin_dir)
    assert one["ip"].startswith("10.78.0.")
    with pytest.raises(ShimdError, match=f"no plugin 'loopback' in {empty}"):
        create(nenv, conflist=single, cni_bin_dir=empty)
    with pytest.raises(InvalidArgument, match="invalid cni_bin_dir 'cni'"):
        create(nenv, conflist=single, cni_bin_dir="cni")
    with pytest.raises(InvalidArgument, match="cni_bin_dir needs a conflist"):
        create(nenv, cni_bin_dir=bin_dir)
    nenv.ok("rm", "-f", info["id"], one["id"])
    assert veths(nenv.netns) == [] and leases(nenv.base) == []
    assert not [n for d in os.listdir(ipam) for n in os.listdir(os.path.join(ipam, d))
                if n != "lock" and not n.startswith("last_reserved_ip")]
    for bad, text in (({"name": "x"}, "'plugins' must be a non-empty list"), ({"plugins": []}, "'name'"),
                      ({"name": "x", "plugins": [{"ipam": {}}]}, "plugin 0 must be a map with a 'type'")):
        with pytest.raises(InvalidArgument, match=text):
            create(nenv, conflist=bad)
    with pytest.raises(InvalidArgument, match="conflist cannot be given with network 'bridge'"):
        create(nenv, conflist=conflist, network="bridge")
