"""Networking tests, kept off the host's network: each test makes a network namespace of its own (`ip netns add`),
runs its managers inside it (`nsenter --net`, which keeps pytest's mount namespace, so the mount checks see every
shim), and sends traffic only from inside it (busybox wget under nsenter). The fixture's teardown, after the
harness removed every container, names what a container left in the namespace or the root: veths, the plugins'
per-container iptables chains and rules, host-local leases; then deletes the namespace."""

from __future__ import annotations

import itertools
import os
import subprocess

import pytest

from tests.harness import Env

BASE_CHAINS = {"CNI-ADMIN", "CNI-FORWARD", "CNI-HOSTPORT-DNAT", "CNI-HOSTPORT-MASQ", "CNI-HOSTPORT-SETMARK"}
BRIDGE = {"SHIMD_DEFAULT_NETWORK": "bridge"}
_count = itertools.count()


def enter(ns: str) -> list[str]:
    return ["nsenter", f"--net=/run/netns/{ns}"]


def in_ns(ns: str, *cmd: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run([*enter(ns), *cmd], capture_output=True, text=True, timeout=timeout)


def fetch(ns: str, url: str, timeout: int = 3) -> str | None:
    """The body at url fetched from inside ns by busybox wget, or None when the request failed."""
    try:
        # busybox-static's wget -T crashes here (SIGSEGV): bound it with timeout instead
        r = in_ns(ns, "timeout", str(timeout), "busybox", "wget", "-q", "-O", "-", url, timeout=timeout + 5)
    except subprocess.TimeoutExpired:
        return None
    return r.stdout if r.returncode == 0 else None


def veths(ns: str) -> list[str]:
    lines = in_ns(ns, "ip", "-o", "link", "show", "type", "veth").stdout.splitlines()
    return [line.split(":")[1].strip() for line in lines if line.strip()]


def container_rules(ns: str) -> list[str]:
    """iptables chains and rules of some container: any CNI chain beyond the plugins' shared ones, any rule that
    names an address or a container id."""
    out = []
    for line in in_ns(ns, "iptables-save").stdout.splitlines():
        words = line.split()
        chain = words[0][1:] if line.startswith(":") else words[1] if line.startswith("-A ") else ""
        if chain.startswith("CNI-") and chain not in BASE_CHAINS or "/32" in line or "id: \\\"" in line:
            out.append(line)
    return out


def leases(base: str) -> list[str]:
    ipam = os.path.join(base, "root", "networks", "ipam")
    out = []
    for net in sorted(os.listdir(ipam)) if os.path.isdir(ipam) else []:
        out += [f"{net}/{n}" for n in os.listdir(os.path.join(ipam, net))
                if n != "lock" and not n.startswith("last_reserved_ip")]
    return out


def network_left(ns: str, base: str) -> list[str]:
    return [f"veth left: {v}" for v in veths(ns)] + [f"iptables left: {r}" for r in container_rules(ns)] + \
        [f"lease left: {x}" for x in leases(base)]


@pytest.fixture
def netns():
    """A network namespace for the test (loopback up), deleted after the harness's teardown; fails the test with
    what nenv found left in it."""
    name = f"sdn-{os.getpid()}-{next(_count)}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    in_ns(name, "ip", "link", "set", "lo", "up")
    problems: list[str] = []
    yield name, problems
    subprocess.run(["ip", "netns", "del", name], check=False)
    if problems:
        pytest.fail("network state left behind:\n  " + "\n  ".join(problems), pytrace=False)


@pytest.fixture
def nenv(netns, bare_env: Env):
    """A manager inside the test's own network namespace, bridge the default network. After the test: every
    container removed, then the namespace and the root looked at for what a container left."""
    name, problems = netns
    bare_env.wrap = enter(name)
    bare_env.netns = name  # type: ignore[attr-defined]
    bare_env.start_manager(env=BRIDGE)
    yield bare_env
    if not bare_env.manager_pid():
        bare_env.start_manager()
    ids = bare_env.ctl("ps", "-a", "-q").out.split()
    if ids:
        bare_env.ctl("rm", "-f", *ids, timeout=120)
    problems += network_left(name, bare_env.base)
