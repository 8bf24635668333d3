"""shimctl create [OPTIONS] IMAGE [CMD ...]: make a container without starting it; prints its id.

The flags are run's (run adds -d). They become the wire form of one shimproto.spec.ContainerSpec (a map of its
fields), sent as `create {spec, start}`; the manager checks it (ContainerSpec.from_wire), so a bad value is refused
there with the same one-line message. The CLI does not import shimproto.spec: building its dataclasses and importing
the parsers behind its checks was about a quarter of `shimctl run -d`'s own time. Start it later with `shimctl start`.
"""

from __future__ import annotations

import argparse
import os

from .. import exitcodes, options
from ..cli import Cli
from . import _policyopts

HELP = "create a container (start it with start)"
ERRORS = exitcodes.CREATE
TIMEOUT = 60.0


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--rm", action="store_true", help="remove the container when it exits")
    p.add_argument("--name", help="container id")
    p.add_argument("--rootfs", help="use this directory (read-only, under an overlay) instead of an image")
    p.add_argument("-e", "--env", action="append", default=[], help="environment variable NAME=VALUE")
    p.add_argument("--env-file", action="append", default=[], metavar="FILE", help="NAME=VALUE lines (before -e)")
    p.add_argument("-w", "--workdir", default="", help="working directory inside the container (default: the "
                   "image's, else /)")
    p.add_argument("--entrypoint", help="run this instead of the image's Entrypoint (its Cmd is dropped too); "
                   "\"\" for none")
    p.add_argument("-u", "--user", default="", help="UID[:GID] or NAME[:GROUP] (default: the image's User)")
    p.add_argument("-l", "--label", action="append", default=[], metavar="KEY=VALUE", help="set a label")
    p.add_argument("--stop-signal", default="", help="signal that stop sends first (default: the image's, "
                   "else SIGTERM)")
    p.add_argument("--memory", type=options.parse_size, help="memory limit, e.g. 64m")
    p.add_argument("--memory-swap", type=options.parse_swap, help="memory plus swap, e.g. 128m (-1: unlimited "
                   "swap; default: no swap)")
    p.add_argument("--pids-limit", type=options.parse_int, help="maximum number of processes")
    p.add_argument("--cpus", type=options.parse_cpus, help="CPUs the container may use, e.g. 0.5")
    p.add_argument("--cpu-shares", type=options.parse_int, help="relative CPU weight (default 1024)")
    p.add_argument("--shm-size", type=options.parse_size, help="size of /dev/shm (default 64m)")
    p.add_argument("--ulimit", action="append", default=[], metavar="NAME=SOFT[:HARD]",
                   help="a resource limit, e.g. nofile=1024:2048 (default open files: 1048576)")
    p.add_argument("--cap-add", action="append", default=[], metavar="CAP", help="add a capability (or ALL)")
    p.add_argument("--cap-drop", action="append", default=[], metavar="CAP", help="drop a capability (or ALL)")
    p.add_argument("--privileged", action="store_true", help="every capability and host device, nothing masked")
    p.add_argument("--security-opt", action="append", default=[], metavar="OPT",
                   help="no-new-privileges, seccomp=unconfined or seccomp=PROFILE.json")
    p.add_argument("--device", action="append", default=[], metavar="HOST[:CTR][:rwm]", help="a host device")
    p.add_argument("--sysctl", action="append", default=[], metavar="KEY=VALUE", help="a namespaced sysctl")
    p.add_argument("--init", action="store_true", help="run tini as PID 1, reaping orphans and passing signals")
    p.add_argument("--stop-timeout", type=options.parse_int, help="seconds stop waits before SIGKILL (default 10)")
    p.add_argument("-i", "--interactive", action="store_true", help="keep stdin open and send ours to it")
    p.add_argument("-t", "--tty", action="store_true", help="give the container a terminal")
    p.add_argument("--hostname", default="", help="the container's host name (default: its id)")
    p.add_argument("--network", "--net", default="", metavar="NETWORK",
                   help="bridge (default), host, none, container:ID or a network's name")
    p.add_argument("-p", "--publish", action="append", default=[], metavar="[IP:]HOSTPORT:CTRPORT[/PROTO]",
                   help="publish a container port on the host (CTRPORT alone: a free host port)")
    p.add_argument("-v", "--volume", action="append", default=[], metavar="SRC:DST[:ro]",
                   help="bind mount an absolute host path, or a named volume, at DST")
    p.add_argument("--tmpfs", action="append", default=[], metavar="PATH[:OPTS]", help="mount a tmpfs at PATH")
    p.add_argument("--read-only", action="store_true", help="mount the container's root read-only")
    p.add_argument("--add-host", action="append", default=[], metavar="HOST:IP", help="a line for /etc/hosts")
    p.add_argument("--dns", action="append", default=[], metavar="IP", help="a nameserver instead of the host's")
    p.add_argument("--log-opt", action="append", default=[], metavar="KEY=VALUE",
                   help="max-size=SIZE (rotate the log past it), max-file=N (files kept, current included)")
    _policyopts.add_arguments(p)
    p.add_argument("args", nargs=argparse.REMAINDER, metavar="IMAGE [CMD ...]")


def spec(a: argparse.Namespace, verb: str, auto_remove: bool) -> dict:
    """The request the flags describe: ContainerSpec's wire form (every key one of its fields; the fields not
    given keep their defaults on the manager's side)."""
    rest = options.command(a.args)
    if a.rootfs:
        image, cmd = "", rest
    elif rest:
        image, cmd = rest[0], rest[1:]
    else:
        raise exitcodes.Usage(f"{verb} needs an IMAGE or --rootfs DIR")
    entrypoint = None if a.entrypoint is None else [a.entrypoint] if a.entrypoint else []
    labels = dict(x.partition("=")[::2] for x in a.label)
    return dict(args=cmd if image or cmd else ["sh"], id=a.name or "", image=image,
                rootfs=os.path.abspath(a.rootfs) if a.rootfs else "",
                env=[e for f in a.env_file for e in options.env_file(f)] + options.env_list(a.env),
                cwd=a.workdir or ("" if image else "/"), tty=a.tty, stdin=a.interactive,
                memory_limit=a.memory, pids_limit=a.pids_limit, auto_remove=auto_remove,
                entrypoint=entrypoint, user=a.user, stop_signal=a.stop_signal, labels=labels,
                hostname=a.hostname, network=a.network, publish=a.publish, volumes=a.volume, tmpfs=a.tmpfs,
                read_only=a.read_only, add_hosts=a.add_host, dns=a.dns, memory_swap=a.memory_swap,
                nano_cpus=a.cpus, cpu_shares=a.cpu_shares, shm_size=a.shm_size, ulimits=a.ulimit,
                cap_add=a.cap_add, cap_drop=a.cap_drop, privileged=a.privileged,
                security_opt=options.security_opts(a.security_opt), devices=a.device,
                sysctls=options.key_values(a.sysctl, "--sysctl"),
                init=a.init, stop_timeout=a.stop_timeout, **_policyopts.fields(a),
                **options.log_opts(a.log_opt))


def create(cli: Cli, spec: dict, start: bool) -> str:
    """Send the spec; the new container's id."""
    info = cli.call("create", {"spec": spec, "start": start}, timeout=TIMEOUT)
    return info["id"]  # type: ignore[index]


def run(cli: Cli, a: argparse.Namespace) -> int:
    print(create(cli, spec(a, "create", auto_remove=a.rm), start=False))
    return 0
