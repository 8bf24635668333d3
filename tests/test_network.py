"""Container networks through the CNI plugins, each test inside a network namespace of its own (tests/netns.py):
published ports served by busybox httpd and fetched with wget, names and addresses between containers, the
network modes, a taken port, and what a removal leaves (the fixture checks veths, rules and leases after each)."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess

import psutil
import pytest

from tests.harness import wait_for
from tests.netns import container_rules, enter, fetch, in_ns, leases, veths

pytestmark = pytest.mark.timeout(180)
HTTPD = ["busybox", "httpd", "-f", "-p", "80", "-h", "/www"]


def serve(env, name: str, text: str, *flags: str) -> str:
    """A container serving `text` at / on port 80 (page written into a tmpfs before httpd starts)."""
    env.ok("run", "-d", "--name", name, *flags, "--tmpfs", "/www", "busybox", "sh", "-c",
           f"echo {text} > /www/index.html && exec {' '.join(HTTPD)}")
    return name


def answered(env, url: str, want: str) -> bool:
    return (fetch(env.netns, url) or "").strip() == want


def test_published_port_answers_on_the_host_side_and_by_the_containers_address(nenv):
    web = serve(nenv, nenv.name("web"), "hello", "-p", "8080:80")
    info = nenv.inspect(web)
    assert info["network"] == "bridge" and re.fullmatch(r"10\.88\.\d+\.\d+", info["ip"])
    assert info["ports"] == [{"container_port": 80, "host_port": 8080, "protocol": "tcp", "host_ip": ""}]
    wait_for(lambda: answered(nenv, "http://127.0.0.1:8080/", "hello"), 10, "the published port to answer")
    assert answered(nenv, f"http://{info['ip']}/", "hello")
    assert answered(nenv, "http://10.88.0.1:8080/", "hello")  # the gateway's address, as another host would
    assert nenv.ok("port", web).out == "80/tcp -> 0.0.0.0:8080\n"
    assert "0.0.0.0:8080->80/tcp" in nenv.ok("ps").out
    assert len(veths(nenv.netns)) == 1 and leases(nenv.base)

    nenv.ok("rm", "-f", web)
    assert veths(nenv.netns) == [] and container_rules(nenv.netns) == [] and leases(nenv.base) == []
    assert fetch(nenv.netns, "http://127.0.0.1:8080/", timeout=1) is None


def test_a_port_given_alone_gets_a_free_host_port_shown_by_port_and_ps(nenv):
    web = serve(nenv, nenv.name("web"), "free", "-p", "80", "-p", "127.0.0.1::80/udp")
    ports = nenv.inspect(web)["ports"]
    tcp = next(p for p in ports if p["protocol"] == "tcp")
    udp = next(p for p in ports if p["protocol"] == "udp")
    assert tcp["host_port"] > 1024 and udp["host_port"] > 1024 and udp["host_ip"] == "127.0.0.1"
    assert nenv.ok("port", web, "80").out == f"0.0.0.0:{tcp['host_port']}\n"
    assert f"127.0.0.1:{udp['host_port']}->80/udp" in nenv.ok("ps").out
    wait_for(lambda: answered(nenv, f"http://127.0.0.1:{tcp['host_port']}/", "free"), 10, "the free port")


def test_a_port_already_taken_is_one_clear_error_and_leaves_nothing_behind(nenv):
    serve(nenv, nenv.name("first"), "one", "-p", "8081:80")
    before = (veths(nenv.netns), container_rules(nenv.netns), leases(nenv.base))
    r = nenv.ctl("run", "-d", "--name", nenv.name("second"), "-p", "8081:80", "busybox", "sleep", "100")
    assert r.rc == 125 and r.err.count("\n") == 1
    assert "0.0.0.0:8081/tcp is already in use" in r.err, r.err
    assert (veths(nenv.netns), container_rules(nenv.netns), leases(nenv.base)) == before
    assert nenv.ctl("inspect", nenv.name("second")).rc == 1
    # a port a process of the host side listens on counts too, and the daemon keeps serving
    holder = subprocess.Popen([*enter(nenv.netns), "python3", "-c", "import socket, time; s = socket.socket(); "
                               "s.bind(('0.0.0.0', 0)); s.listen(); print(s.getsockname()[1], flush=True); "
                               "time.sleep(60)"], stdout=subprocess.PIPE, text=True)
    try:
        port = holder.stdout.readline().strip()  # type: ignore[union-attr]
        r = nenv.ctl("run", "-d", "-p", f"{port}:80", "busybox", "sleep", "100")
        assert r.rc == 125 and f":{port}/tcp is already in use" in r.err, r.err
    finally:
        holder.kill()
        holder.wait()
    for bad in ("-p", "99999:80"), ("-p", "8080:80/sctp"), ("--network", "nosuch"), ("--network", "host", "-p", "80"):
        r = nenv.ctl("run", "-d", *bad, "busybox", "true")
        assert r.rc == 125 and r.err.count("\n") == 1, (bad, r.err)
    assert answered(nenv, "http://127.0.0.1:8081/", "one")


def test_containers_on_a_named_network_reach_each_other_by_address_and_by_name(nenv):
    assert nenv.ok("network", "create", "--subnet", "10.77.0.0/24", "app").out == "app\n"
    nenv.ok("network", "create", "other")
    assert nenv.ctl("network", "create", "app").rc == 1
    assert nenv.ctl("network", "create", "--subnet", "10.77.0.128/25", "clash").rc == 1
    server = serve(nenv, nenv.name("srv"), "by-name", "--network", "app", "--hostname", "backend")
    ip = nenv.inspect(server)["ip"]
    assert ip.startswith("10.77.0.")
    client = nenv.name("cli")
    nenv.ok("run", "-d", "--name", client, "--network", "app", "busybox", "sleep", "1000")
    for host in (ip, server, "backend"):
        out = wait_for(lambda h=host: nenv.ctl("exec", client, "timeout", "3", "wget", "-q", "-O", "-",
                                                 f"http://{h}/").out.strip() == "by-name", 15, f"fetch {host}")
        assert out
    # the server was made first: its /etc/hosts learnt the client's name afterwards
    hosts = nenv.ok("exec", server, "cat", "/etc/hosts").out
    assert re.search(rf"^{re.escape(nenv.inspect(client)['ip'])}\s+{client}$", hosts, re.M), hosts
    # a container on another network does not get through
    stranger = nenv.name("far")
    nenv.ok("run", "-d", "--name", stranger, "--network", "other", "busybox", "sleep", "1000")
    assert nenv.ctl("exec", stranger, "timeout", "3", "wget", "-q", "-O", "-", f"http://{server}/").rc != 0

    nets = {n["name"]: n for n in json.loads(nenv.ok("network", "inspect", "app", "other").out)}
    assert sorted(nets["app"]["containers"]) == sorted([server, client]) and nets["app"]["subnet"] == "10.77.0.0/24"
    assert "app" in nenv.ok("network", "ls").out
    r = nenv.ctl("network", "rm", "app")
    assert r.rc == 1 and "in use by" in r.err
    nenv.ok("rm", "-f", server, client)
    nenv.ok("network", "rm", "app")
    assert nenv.ctl("network", "inspect", "app").rc == 1


def test_host_none_and_container_network_modes(nenv):
    none = nenv.ok("run", "--rm", "--network", "none", "busybox", "ip", "-o", "addr").out
    assert "lo" in none and "eth0" not in none
    web = serve(nenv, nenv.name("web"), "shared")
    ip = nenv.inspect(web)["ip"]
    host = nenv.ok("run", "--rm", "--network", "host", "busybox", "ip", "-o", "link").out
    assert "shimd0" in host and "veth" in host  # the manager's namespace: the bridge and web's veth
    shared = nenv.ok("run", "--rm", "--network", f"container:{web}", "busybox", "sh", "-c",
                     "ip -o addr show eth0; timeout 3 wget -q -O - http://127.0.0.1/").out
    assert f"inet {ip}/" in shared and "shared" in shared
    stopped = nenv.name("stopped")
    nenv.ok("create", "--name", stopped, "busybox", "true")
    r = nenv.ctl("run", "--rm", "--network", f"container:{stopped}", "busybox", "true")
    assert r.rc == 125 and "not running" in r.err


def test_the_shim_killed_releases_address_veth_and_rules_through_the_offline_cleanup(nenv):
    web = serve(nenv, nenv.name("web"), "x", "-p", "8082:80")
    info = nenv.inspect(web)
    os.kill(info["shim_pid"], signal.SIGKILL)
    wait_for(lambda: nenv.inspect(web)["status"] == "stopped", 15, "the lost shim to be noticed")
    wait_for(lambda: not veths(nenv.netns) and not container_rules(nenv.netns) and not leases(nenv.base), 15,
             "the dead shim's network to be released")
    nenv.ok("rm", web)


def test_a_manager_in_another_mount_namespace_removes_a_container_it_did_not_create(nenv, shared_root):
    """MountFlags=slave: each manager in a new mount namespace; the pin lives in the shim's, so any manager can
    have it released."""
    slave = ["unshare", "--mount", "--propagation", "slave", *nenv.wrap]
    nenv.kill_manager()
    nenv.start_manager(wrap=slave, env={"SHIMD_DEFAULT_NETWORK": "bridge"})
    web = serve(nenv, nenv.name("web"), "ns", "-p", "8083:80")
    wait_for(lambda: answered(nenv, "http://127.0.0.1:8083/", "ns"), 10, "the port")
    nenv.kill_manager()
    nenv.start_manager(wrap=slave)
    assert answered(nenv, "http://127.0.0.1:8083/", "ns")
    nenv.ok("rm", "-f", web)
    assert not veths(nenv.netns) and not container_rules(nenv.netns) and not leases(nenv.base)
    nenv.kill_manager(signal.SIGTERM)
    nenv.start_manager()


def test_the_readme_example_serves_a_volume_across_a_manager_kill_and_keeps_its_data(nenv):
    """README's networks and volumes example, command by command."""
    web = nenv.ok("run", "-d", "-p", "8080:80", "-v", "site:/www", "busybox", "httpd", "-f", "-h", "/www").out.strip()
    nenv.ok("exec", web, "sh", "-c", "echo hello from a volume > /www/index.html")
    wait_for(lambda: answered(nenv, "http://127.0.0.1:8080/", "hello from a volume"), 10, "the page")
    nenv.kill_manager(signal.SIGKILL)
    assert answered(nenv, "http://127.0.0.1:8080/", "hello from a volume")
    nenv.start_manager()
    nenv.ok("rm", "-f", web)
    with open(os.path.join(nenv.root, "volumes", "site", "_data", "index.html")) as f:
        assert f.read() == "hello from a volume\n"


def _plugin_dir(tmp_path, body: str) -> str:
    """A plugin directory whose `firewall` (the list's last plugin) does `body` on ADD, else the real one."""
    d = tmp_path / "cni"
    d.mkdir()
    (d / "firewall").write_text(f'#!/bin/sh\nif [ "$CNI_COMMAND" = ADD ]; then {body}; fi\n'
                                'exec /usr/lib/cni/firewall\n')
    (d / "firewall").chmod(0o755)
    return f"{d}:/usr/lib/cni"


def test_a_manager_killed_during_add_rolls_back_through_the_live_shim_with_nothing_left(nenv, tmp_path):
    """The manager dies while the shim runs the plugins; the shim lives. The next manager rolls the create back
    while bridge's ADD is still under way (it waits 8 s before it starts, a child of it acts at 5 s): the
    shim cuts its create short (the plugin and every process it started are killed: its process group) and releases
    the network, and nothing is left, then or once every plugin process is gone."""
    nenv.kill_manager(signal.SIGTERM)
    pid_file = os.path.join(nenv.state, "shimd.pid")
    d = tmp_path / "cni"
    d.mkdir()
    late = tmp_path / "late"  # what a child of the plugin (bridge's iptables) does after the plugin was cut short
    (d / "bridge").write_text(f'#!/bin/sh\nif [ "$CNI_COMMAND" = ADD ]; then (sleep 5; touch {late}) & '
                              f'kill -9 $(cat {pid_file}); sleep 8; fi\nexec /usr/lib/cni/bridge\n')
    (d / "bridge").chmod(0o755)
    nenv.start_manager(env={"SHIMD_DEFAULT_NETWORK": "bridge", "CNI_PATH": f"{d}:/usr/lib/cni"})
    id = nenv.name("a")
    assert nenv.ctl_killing_the_manager("run", "-d", "--name", id, "busybox", "sleep", "100") == -signal.SIGKILL
    shim = int(open(os.path.join(nenv.state, "shims", id, "shim.pid")).read())
    assert psutil.pid_exists(shim), "the shim died with the manager: the test proves nothing"
    nenv.start_manager()
    assert nenv.ok("ps", "-a", "-q").out == ""
    assert not psutil.pid_exists(shim)
    # a plugin cut short would go on by itself and make its things after the rollback: wait until none runs
    wait_for(lambda: not any(str(d) in " ".join(p.info["cmdline"] or ())
                             for p in psutil.process_iter(["cmdline"])), 20, "the plugins to finish")
    assert (veths(nenv.netns), container_rules(nenv.netns), leases(nenv.base)) == ([], [], [])
    assert not late.exists(), "a child of the plugin cut short went on after the rollback"  # it is a plugin process


def test_a_plugin_failing_its_add_rolls_the_create_back_with_nothing_left(nenv, tmp_path):
    nenv.kill_manager(signal.SIGTERM)
    nenv.start_manager(env={"SHIMD_DEFAULT_NETWORK": "bridge", "CNI_PATH": _plugin_dir(
        tmp_path, """echo '{"cniVersion":"1.0.0","code":7,"msg":"planted failure"}'; exit 1""")})
    r = nenv.ctl("run", "-d", "--name", nenv.name("f"), "-p", "8084:80", "busybox", "sleep", "100")
    assert r.rc == 125 and r.err.count("\n") == 1 and "CNI ADD firewall: planted failure" in r.err, r.err
    assert (veths(nenv.netns), container_rules(nenv.netns), leases(nenv.base)) == ([], [], [])
    assert nenv.ok("ps", "-a", "-q").out == ""
    nenv.kill_manager(signal.SIGTERM)
    nenv.start_manager(env={"SHIMD_DEFAULT_NETWORK": "bridge"})
    nenv.ok("run", "-d", "-p", "8084:80", "busybox", "sleep", "100")  # the port was freed


def test_manager_and_shim_killed_in_the_middle_of_add_are_rolled_back_from_the_record(nenv, tmp_path):
    """The worst moment: the bridge plugin has made the veth, the lease and its rules, then the manager and the
    shim die (and the plugin with them). The next manager rolls the create back; DEL runs from the record the shim
    wrote before ADD. Known gap: with the namespace gone, bridge's DEL cannot learn the address its masquerade rule
    names, so that one rule stays (docs/architecture.md); everything else goes."""
    nenv.kill_manager(signal.SIGTERM)
    pid_file = os.path.join(nenv.state, "shimd.pid")
    nenv.start_manager(env={"SHIMD_DEFAULT_NETWORK": "bridge", "CNI_PATH": _plugin_dir(
        tmp_path, f"kill -9 $(cat {pid_file}) $PPID; exit 1")})
    r = nenv.ctl("run", "-d", "--name", nenv.name("k"), "-p", "8085:80", "busybox", "sleep", "100")
    assert r.rc == 125, r.err
    assert nenv.proc.wait(10) == -signal.SIGKILL
    nenv.proc = None
    nenv.start_manager()
    assert nenv.ok("ps", "-a", "-q").out == ""
    assert veths(nenv.netns) == [] and leases(nenv.base) == []
    left = container_rules(nenv.netns)
    rule = next(x for x in left if x.startswith("-A POSTROUTING -s 10.88."))
    chain = shlex.split(rule)[-1]
    assert all(chain in x for x in left), left  # nothing but bridge's masquerade chain and the jump to it
    # the known gap, removed by hand so that the fixture's check judges everything else
    in_ns(nenv.netns, "iptables", "-t", "nat", "-D", *shlex.split(rule)[1:])
    for op in ("-F", "-X"):
        in_ns(nenv.netns, "iptables", "-t", "nat", op, chain)
