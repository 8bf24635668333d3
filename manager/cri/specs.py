"""CRI configs -> shimd container specs (the wire form of shimproto.spec.ContainerSpec), for sandboxes and for the
containers of a pod. Pure functions of the request (and of files the request names: seccomp profiles, the CNI
configuration directory), so every rule of the mapping is here and nowhere else.

A sandbox is a container of the sandbox image (by default the built-in busybox running `sleep` under tini, which
reaps the pod's orphans) that owns the pod's network (a CNI configuration from cni_conf_dir), IPC, UTS and, for
pods that share one, PID namespaces. Each container of the pod joins them with `container:<sandbox id>`; host
namespaces on request are `host`."""

from __future__ import annotations

import json
import os

from shimproto.errors import InvalidArgument
from shimproto.pod import check_log_path

from .config import CriConfig
from .meta import CONTAINER, SANDBOX, CriMeta
from .pb import api_pb2 as pb

BUILTIN_SANDBOX = "busybox"
PAUSE_ARGS = ["sleep", "2147483647"]  # under tini (init): it reaps the pod's orphans; SIGTERM ends it
SANDBOX_OOM_SCORE_ADJ = -998  # kubelet's for sandboxes; the spec clamps it to what this host allows
PROTOCOLS = {pb.TCP: "tcp", pb.UDP: "udp"}
PROPAGATION = {pb.PROPAGATION_PRIVATE: "", pb.PROPAGATION_HOST_TO_CONTAINER: "rslave",
               pb.PROPAGATION_BIDIRECTIONAL: "rshared"}
CNI_EXTENSIONS = (".conf", ".conflist", ".json")


class NoNetworkConfig(InvalidArgument):
    pass


def cni_conflist(conf_dir: str) -> dict:
    """The pod network: the first configuration in conf_dir by file name, as libcni's ConfFiles orders them (a
    single-plugin .conf becomes a list of one)."""
    try:
        names = sorted(n for n in os.listdir(conf_dir) if n.endswith(CNI_EXTENSIONS))
    except OSError as e:
        raise NoNetworkConfig(f"no CNI network configuration: {conf_dir}: {e.strerror}") from None
    for name in names:
        try:
            with open(os.path.join(conf_dir, name)) as f:
                conf = json.load(f)
        except (OSError, ValueError):
            continue
        if not isinstance(conf, dict) or not conf.get("name"):
            continue
        if "plugins" not in conf and conf.get("type"):
            conf = {"cniVersion": conf.get("cniVersion", "0.4.0"), "name": conf["name"], "plugins": [conf]}
        if isinstance(conf.get("plugins"), list) and conf["plugins"]:
            return conf
    raise NoNetworkConfig(f"no CNI network configuration in {conf_dir} (.conf, .conflist or .json)")


def port_texts(mappings: list) -> list[str]:
    """CRI port mappings with a host port -> docker's -p texts (a mapping without one publishes nothing)."""
    out = []
    for m in mappings:
        if m.host_port <= 0:
            continue
        if m.protocol not in PROTOCOLS:
            raise InvalidArgument(f"port mapping {m.container_port}: protocol {pb.Protocol.Name(m.protocol)} is "
                                  f"not supported (tcp and udp are)")
        ip = f"{m.host_ip}:" if m.host_ip else ""
        out.append(f"{ip}{m.host_port}:{m.container_port}/{PROTOCOLS[m.protocol]}")
    return out


def _host(mode: int) -> bool:
    return mode == pb.NODE


def sandbox_spec(sid: str, config: pb.PodSandboxConfig, cfg: CriConfig, runtime_handler: str) -> dict:
    md = config.metadata
    linux = config.linux
    sc = linux.security_context
    nso = sc.namespace_options
    host_net = _host(nso.network)
    meta = CriMeta(kind=SANDBOX, name=md.name, attempt=md.attempt, namespace=md.namespace, uid=md.uid,
                   labels=dict(config.labels), annotations=dict(config.annotations), pod_namespace=md.namespace,
                   pod_name=md.name,
                   extra={"hostname": config.hostname, "network": nso.network, "pid": nso.pid, "ipc": nso.ipc,
                          "log_directory": config.log_directory, "runtime_handler": runtime_handler})
    spec: dict = {
        "id": sid, "image": cfg.sandbox_image or BUILTIN_SANDBOX,
        "args": [] if cfg.sandbox_image else PAUSE_ARGS, "init": not cfg.sandbox_image, "cwd": "",
        "labels": meta.labels_for_shimd(), "oom_score_adj": SANDBOX_OOM_SCORE_ADJ,
        "ipc": "host" if _host(nso.ipc) else "", "pid": "host" if _host(nso.pid) else "",
        "uts": "host" if host_net else "", "sysctls": dict(linux.sysctls),
        "read_only": sc.readonly_rootfs, "privileged": sc.privileged, "stop_timeout": 0,
    }
    if host_net:
        spec["network"] = "host"
    else:
        spec["conflist"] = cni_conflist(cfg.cni_conf_dir)
        spec["cni_bin_dir"] = cfg.cni_bin_dir
        spec["publish"] = port_texts(config.port_mappings)
        spec["hostname"] = config.hostname
    dns = config.dns_config
    if not host_net:
        spec |= {"dns": list(dns.servers), "dns_search": list(dns.searches), "dns_options": list(dns.options)}
    if sc.HasField("run_as_user"):
        spec["user"] = str(sc.run_as_user.value) + (f":{sc.run_as_group.value}" if sc.HasField("run_as_group") else "")
    if sc.supplemental_groups:
        spec["group_add"] = [str(g) for g in sc.supplemental_groups]
    return spec


def _user(sc: pb.LinuxContainerSecurityContext) -> str:
    if sc.HasField("run_as_user"):
        user = str(sc.run_as_user.value)
    elif sc.run_as_username:
        user = sc.run_as_username
    elif sc.HasField("run_as_group"):
        raise InvalidArgument("run_as_group needs run_as_user or run_as_username")
    else:
        return ""
    return user + (f":{sc.run_as_group.value}" if sc.HasField("run_as_group") else "")


def seccomp_opt(sc: pb.LinuxContainerSecurityContext) -> list[str]:
    """The security_opt of a seccomp profile: the runtime's default, unconfined, or a file of this host
    (`localhost/<absolute path>` in the deprecated field, an absolute localhost_ref in the typed one). A container
    that names no profile at all runs unconfined, as CRI defines it (kubelet sends RuntimeDefault when asked)."""
    if sc.privileged:
        return ["seccomp=unconfined"]
    path = ""
    if sc.HasField("seccomp"):
        t = sc.seccomp.profile_type
        if t == pb.SecurityProfile.Unconfined:
            return ["seccomp=unconfined"]
        if t == pb.SecurityProfile.Localhost:
            path = sc.seccomp.localhost_ref
            if not path:
                raise InvalidArgument("seccomp profile type Localhost needs localhost_ref")
    elif not sc.seccomp_profile_path:
        return ["seccomp=unconfined"]  # CRI's default when neither field is set (containerd's too)
    else:
        p = sc.seccomp_profile_path
        if p == "unconfined":
            return ["seccomp=unconfined"]
        if p in ("runtime/default", "docker/default"):
            return []
        if not p.startswith("localhost/"):
            raise InvalidArgument(f"seccomp profile {p!r}: use runtime/default, unconfined or localhost/<path>")
        path = p.removeprefix("localhost/")
    if not path:
        return []
    if not os.path.isabs(path):
        raise InvalidArgument(f"seccomp profile {path!r}: the path must be absolute")
    try:
        with open(path) as f:
            text = f.read(1 << 20)
    except OSError as e:
        raise InvalidArgument(f"seccomp profile {path}: {e.strerror}") from None
    return ["seccomp=" + text]


def _volume(m: pb.Mount) -> tuple[str, dict]:
    if not os.path.isabs(m.host_path) or not os.path.isabs(m.container_path):
        raise InvalidArgument(f"mount {m.host_path!r} -> {m.container_path!r}: both paths must be absolute")
    if m.propagation not in PROPAGATION:
        raise InvalidArgument(f"mount {m.container_path}: unknown propagation {m.propagation}")
    if not os.path.exists(m.host_path):
        os.makedirs(m.host_path, exist_ok=True)  # as containerd: kubelet's paths may not exist yet
    opts = [o for o in ("ro" if m.readonly else "", PROPAGATION[m.propagation]) if o]
    text = f"{m.host_path}:{m.container_path}" + (":" + ",".join(opts) if opts else "")
    return text, {"container_path": m.container_path, "host_path": m.host_path, "readonly": m.readonly,
                  "propagation": m.propagation}


def resources(r: pb.LinuxContainerResources) -> dict:
    out: dict = {}
    if r.memory_limit_in_bytes > 0:
        out["memory_limit"] = r.memory_limit_in_bytes
    if r.cpu_quota > 0 and r.cpu_period > 0:
        out["nano_cpus"] = min(r.cpu_quota * 10**9 // r.cpu_period, (os.cpu_count() or 1) * 10**9)
    if r.cpu_shares > 0:
        out["cpu_shares"] = max(2, min(r.cpu_shares, 262144))
    if r.oom_score_adj:
        out["oom_score_adj"] = r.oom_score_adj
    return out


def container_spec(cid: str, sandbox: dict, sbmeta: CriMeta, config: pb.ContainerConfig) -> dict:
    """sandbox: the manager's view of the pod's sandbox container."""
    md = config.metadata
    linux = config.linux
    sc = linux.security_context
    nso = sc.namespace_options
    sid = sandbox["id"]
    join = f"container:{sid}"
    host_net = sbmeta.extra.get("network") == pb.NODE
    volumes, mounts = [], []
    for m in config.mounts:
        text, view = _volume(m)
        volumes.append(text)
        mounts.append(view)
    log_dir = sbmeta.extra.get("log_directory", "")
    log_path = os.path.join(log_dir, config.log_path) if log_dir and config.log_path else ""
    meta = CriMeta(kind=CONTAINER, name=md.name, attempt=md.attempt, pod=sid, labels=dict(config.labels),
                   annotations=dict(config.annotations), image=config.image.image, log_path=log_path,
                   mounts=mounts, pod_namespace=sbmeta.namespace, pod_name=sbmeta.name,
                   extra={"stdin_once": config.stdin_once})
    pid = {pb.NODE: "host", pb.POD: join, pb.CONTAINER: "", pb.TARGET: f"container:{nso.target_id}"}[nso.pid]
    spec: dict = {
        "id": cid, "image": config.image.image, "args": list(config.args),
        "entrypoint": list(config.command) if config.command else None, "cwd": config.working_dir,
        "env": [f"{kv.key}={kv.value}" for kv in config.envs], "tty": config.tty, "stdin": config.stdin,
        "labels": meta.labels_for_shimd(), "network": "host" if host_net else join,
        "ipc": "host" if _host(nso.ipc) else join, "pid": pid, "uts": "host" if host_net else join,
        "volumes": volumes, "devices": [f"{d.host_path}:{d.container_path}:{d.permissions or 'rwm'}"
                                        for d in config.devices],
        "user": _user(sc), "group_add": [str(g) for g in sc.supplemental_groups],
        "cap_add": list(sc.capabilities.add_capabilities), "cap_drop": list(sc.capabilities.drop_capabilities),
        "privileged": sc.privileged, "read_only": sc.readonly_rootfs,
        "security_opt": (["no-new-privileges"] if sc.no_new_privs else []) + seccomp_opt(sc),
        **resources(linux.resources),
    }
    if log_path:
        spec["log_path"] = log_path
    if not sc.privileged and sc.masked_paths:
        spec["masked_paths"] = list(sc.masked_paths)
    if not sc.privileged and sc.readonly_paths:
        spec["readonly_paths"] = list(sc.readonly_paths)
    return spec


def make_log_dir(log_path: str) -> None:
    """The directory of a container's CRI log (the pod's log_directory, or below it), made 0755 when missing (the
    path checked first: absolute, no '..')."""
    check_log_path(log_path)
    try:
        os.makedirs(os.path.dirname(log_path), mode=0o755, exist_ok=True)
    except OSError as e:
        raise InvalidArgument(f"invalid log_path {log_path}: cannot make its directory: {e.strerror}") from None
