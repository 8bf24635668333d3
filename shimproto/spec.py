"""The one request model of a container: what a user asks for, written once.

The CLI builds a ContainerSpec from its flags and sends `spec.to_wire()` as the `spec` param of `create`; the manager
validates it with `ContainerSpec.from_wire` (every bad field is an InvalidArgument that names it), keeps it in the
container's metadata, and hands the same wire form to the shim inside its create request (ShimCreate), with the
paths only the manager knows. Nothing renames a field on the way.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field, fields

from . import plans, pod, policy, runflags
from .errors import InvalidArgument
from .wire import Params

MIN_MEMORY = 4 * 1024 * 1024
MOUNT_DATA_MAX = 4095  # mount(2) copies one page of options: a longer lowerdir list is cut, not refused


def overlay_data(lower: str, upper: str, work: str) -> str:
    """overlay's mount options; lower is ':'-joined, top first. The manager checks its length against
    MOUNT_DATA_MAX before a create; the shim mounts exactly this."""
    return f"lowerdir={lower},upperdir={upper},workdir={work}"
MAX_LIMIT = 2**63 - 1  # what the kernel's cgroup files and runc's int64 fields can hold


@dataclass
class ContainerSpec:
    args: list[str]  # with an image: docker's CMD ([] : the image's); with --rootfs: the whole command
    id: str = ""  # "" : the manager picks one
    image: str = ""  # an image reference (a stored image, or the built-in busybox); exactly one of image and rootfs
    rootfs: str = ""  # an absolute host directory, used read-only under an overlay
    env: list[str] = field(default_factory=list)  # after the image's Env, replacing its names
    cwd: str = "/"  # "" : the image's WorkingDir, else /
    hostname: str = ""  # "" : the container id
    tty: bool = False
    stdin: bool = False
    memory_limit: int | None = None
    pids_limit: int | None = None
    log_max_size: int | None = None  # 0: never rotate; None: the manager's configured default
    log_max_files: int | None = None
    auto_remove: bool = False
    entrypoint: list[str] | None = None  # None: the image's; [] : none (docker's --entrypoint "")
    user: str = ""  # "" : the image's User, else root; UID[:GID] or NAME[:GROUP] of the container's /etc/passwd
    stop_signal: str = ""  # "" : the image's StopSignal, else SIGTERM
    labels: dict[str, str] = field(default_factory=dict)  # over the image's Labels
    # networks, ports and mounts (docker's texts, parsed by shimproto.plans); "" network: the manager's default
    network: str = ""
    publish: list[str] = field(default_factory=list)
    volumes: list[str] = field(default_factory=list)
    tmpfs: list[str] = field(default_factory=list)
    read_only: bool = False
    add_hosts: list[str] = field(default_factory=list)  # HOST:IP lines for /etc/hosts
    dns: list[str] = field(default_factory=list)  # nameservers for /etc/resolv.conf instead of the host's
    # resources, security and the process (docker's texts where docker takes text: shimproto.runflags parses them)
    nano_cpus: int | None = None  # --cpus times 1e9
    cpu_shares: int | None = None
    memory_swap: int | None = None  # memory + swap; -1: unlimited; None: no swap (memory_swap = memory_limit)
    shm_size: int | None = None  # /dev/shm's size; None: 64 MiB
    cap_add: list[str] = field(default_factory=list)
    cap_drop: list[str] = field(default_factory=list)
    privileged: bool = False
    security_opt: list[str] = field(default_factory=list)
    init: bool = False  # tini as PID 1, bind-mounted from the host
    stop_timeout: int | None = None  # seconds stop waits after the stop signal; None: the manager's default
    ulimits: list[str] = field(default_factory=list)  # NAME=SOFT[:HARD]
    devices: list[str] = field(default_factory=list)  # HOST[:CONTAINER][:rwm]
    sysctls: dict[str, str] = field(default_factory=dict)
    restart: str = ""  # docker's --restart text ("" : no); shimproto.policy
    healthcheck: dict | None = None  # docker's health config map (None: the image's); shimproto.policy
    # what a pod's containers need (a CRI server sends these; shimproto.pod checks them)
    ipc: str = ""  # "" : its own namespace; "host"; "container:ID" : a running container's
    pid: str = ""
    uts: str = ""
    masked_paths: list[str] | None = None  # None: the defaults (runtime/bundle.py); a list replaces them
    readonly_paths: list[str] | None = None
    group_add: list[str] = field(default_factory=list)  # gids or group names, after the user's own groups
    oom_score_adj: int | None = None
    log_path: str = ""  # "" : <root>/containers/<id>/container.log; else this file (its directory must exist)
    dns_search: list[str] = field(default_factory=list)  # resolv.conf's search line instead of the host's
    dns_options: list[str] = field(default_factory=list)  # resolv.conf's options line instead of the host's
    conflist: dict | None = None  # a CNI conflist instead of a named network (network must be "")
    cni_bin_dir: str = ""  # where conflist's plugins are ("" : the shim's own search path; runtime/cni.py)

    def to_wire(self) -> dict:
        return asdict(self)

    @classmethod
    def from_wire(cls, raw: object, what: str = "create") -> ContainerSpec:
        """Validate a wire map into a spec; unknown keys are ignored (a newer client may send more)."""
        if not isinstance(raw, dict):
            raise InvalidArgument(f"{what}: parameter 'spec' must be a map")
        p = Params(f"{what}: spec", raw)
        spec = cls(
            args=p.strlist("args", required=True), id=p.str("id", ""), image=p.str("image", ""),
            rootfs=p.str("rootfs", ""), env=p.strlist("env"), cwd=p.str("cwd", "/"),
            hostname=p.str("hostname", ""), tty=p.bool("tty"), stdin=p.bool("stdin"),
            memory_limit=p.int("memory_limit"), pids_limit=p.int("pids_limit"),
            log_max_size=p.int("log_max_size"), log_max_files=p.int("log_max_files"),
            auto_remove=p.bool("auto_remove"),
            entrypoint=(p.strlist("entrypoint"), None)[raw.get("entrypoint") is None],  # read either way: None or []
            user=p.str("user", ""), stop_signal=p.str("stop_signal", ""), labels=p.map("labels", {}),
            network=p.str("network", ""), publish=p.strlist("publish"),
            volumes=p.strlist("volumes"), tmpfs=p.strlist("tmpfs"), read_only=p.bool("read_only"),
            add_hosts=p.strlist("add_hosts"), dns=p.strlist("dns"), restart=p.str("restart", ""),
            healthcheck=policy.check_health(raw.get("healthcheck"), f"{what}: healthcheck"),
            nano_cpus=p.int("nano_cpus"), cpu_shares=p.int("cpu_shares"), memory_swap=p.int("memory_swap"),
            shm_size=p.int("shm_size"), cap_add=p.strlist("cap_add"), cap_drop=p.strlist("cap_drop"),
            privileged=p.bool("privileged"), security_opt=p.strlist("security_opt"), init=p.bool("init"),
            stop_timeout=p.int("stop_timeout"), ulimits=p.strlist("ulimits"), devices=p.strlist("devices"),
            sysctls=p.map("sysctls", {}),
            ipc=p.str("ipc", ""), pid=p.str("pid", ""), uts=p.str("uts", ""),
            masked_paths=_optional_list(p, raw, "masked_paths"),
            readonly_paths=_optional_list(p, raw, "readonly_paths"), group_add=p.strlist("group_add"),
            oom_score_adj=p.int("oom_score_adj"), log_path=p.str("log_path", ""),
            dns_search=p.strlist("dns_search"), dns_options=p.strlist("dns_options"),
            conflist=pod.check_conflist(raw.get("conflist")), cni_bin_dir=p.str("cni_bin_dir", ""),
        )
        spec.check()
        return spec

    def check(self) -> None:
        if not self.args and not self.image:
            raise InvalidArgument("no command given for the container")
        if bool(self.image) == bool(self.rootfs):
            raise InvalidArgument("give exactly one of an image or --rootfs DIR")
        if self.memory_limit is not None and not MIN_MEMORY <= self.memory_limit <= MAX_LIMIT:
            raise InvalidArgument(f"memory limit {self.memory_limit} must be between 4 MiB and {MAX_LIMIT} bytes")
        if self.pids_limit is not None and not 1 <= self.pids_limit <= MAX_LIMIT:
            raise InvalidArgument(f"pids limit {self.pids_limit} must be between 1 and {MAX_LIMIT}")
        if self.log_max_size is not None and not 0 <= self.log_max_size <= MAX_LIMIT or \
                self.log_max_files is not None and not 2 <= self.log_max_files <= 1000:
            raise InvalidArgument("log max-size must be >= 0 and max-file between 2 and 1000")
        if self.cwd and not self.cwd.startswith("/"):
            raise InvalidArgument(f"working directory {self.cwd!r} must be an absolute path")
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in self.labels.items()):
            raise InvalidArgument("labels must map strings to strings")
        plans.check_request(self.network, self.publish, self.volumes, self.tmpfs)
        plans.check_names(self.add_hosts, self.dns)
        policy.check_restart(self.restart, self.auto_remove)
        policy.check_health(self.healthcheck)
        self._check_run_flags()
        self._check_pod_fields()

    def _check_pod_fields(self) -> None:
        for name in pod.NAMESPACES:
            pod.check_ns_mode(getattr(self, name), name)
        if self.uts and self.hostname:
            raise InvalidArgument(f"hostname cannot be set with uts {self.uts!r}: the name is the namespace's")
        pod.check_paths(self.masked_paths, "masked_paths")
        pod.check_paths(self.readonly_paths, "readonly_paths")
        pod.check_groups(self.group_add)
        pod.check_oom(self.oom_score_adj)
        pod.check_log_path(self.log_path)
        if self.log_path and self.log_max_size:
            raise InvalidArgument("log_max_size must be 0 with log_path: that log's owner rotates it")
        pod.check_dns_words(self.dns_search, "dns_search")
        pod.check_dns_words(self.dns_options, "dns_options")
        if self.conflist is not None and self.network:
            raise InvalidArgument(f"conflist cannot be given with network {self.network!r}: it is the network")
        pod.check_cni_bin_dir(self.cni_bin_dir, self.conflist)

    def _check_run_flags(self) -> None:
        if self.nano_cpus is not None and not 10**7 <= self.nano_cpus <= (os.cpu_count() or 1) * 10**9:
            raise InvalidArgument(f"--cpus {self.nano_cpus / 1e9:g}: the range is 0.01 to "
                                  f"{os.cpu_count() or 1}, the CPUs this host has")
        if self.cpu_shares is not None and not 0 <= self.cpu_shares <= 262144:
            raise InvalidArgument(f"--cpu-shares {self.cpu_shares} must be between 2 and 262144 (0: the default)")
        if self.memory_swap is not None and self.memory_swap != -1:
            if self.memory_limit is None:
                raise InvalidArgument("--memory-swap needs --memory: it is the memory limit plus swap")
            if not self.memory_limit <= self.memory_swap <= MAX_LIMIT:
                raise InvalidArgument(f"--memory-swap {self.memory_swap} must be at least --memory "
                                      f"({self.memory_limit}), or -1 for unlimited swap")
        if self.shm_size is not None and not 0 < self.shm_size <= MAX_LIMIT:
            raise InvalidArgument(f"--shm-size {self.shm_size} must be positive")
        if self.stop_timeout is not None and not 0 <= self.stop_timeout <= 3600:
            raise InvalidArgument(f"--stop-timeout {self.stop_timeout} must be between 0 and 3600 seconds")
        runflags.capabilities(self.cap_add, self.cap_drop, ())  # every name known
        runflags.security_opts(self.security_opt)
        for text in self.ulimits:
            runflags.Ulimit.parse(text)
        if len({runflags.Ulimit.parse(t).name for t in self.ulimits}) != len(self.ulimits):
            raise InvalidArgument("the same --ulimit is given twice")
        for text in self.devices:
            runflags.DeviceSpec.parse(text)
        for key, value in self.sysctls.items():
            if not isinstance(key, str) or not isinstance(value, str):
                raise InvalidArgument("sysctls must map strings to strings")
            runflags.check_sysctl(key, value, self.network, self.ipc)


def _optional_list(p: Params, raw: dict, name: str) -> list[str] | None:
    """A list field where None (absent) and [] differ: None keeps a default, [] means none."""
    return None if raw.get(name) is None else p.strlist(name)


@dataclass
class ShimCreate:
    """The shim's create request: the spec plus the paths the manager chose for it."""

    spec: ContainerSpec
    lower: str  # the read-only trees under the overlay, top first, ':'-joined as overlay's lowerdir takes them
    upper: str
    work: str
    log_path: str
    cgroups_path: str
    files_dir: str  # where the shim writes the container's hostname, hosts and resolv.conf
    network: plans.NetworkPlan = field(default_factory=plans.NetworkPlan)
    mounts: list[plans.MountPlan] = field(default_factory=list)  # after the /etc files, in this order
    namespaces: plans.NamespacePlan = field(default_factory=plans.NamespacePlan)

    def to_wire(self) -> dict:
        return {**{f.name: getattr(self, f.name) for f in fields(self) if f.type == "str"},
                "spec": self.spec.to_wire(), "network": self.network.to_wire(),
                "mounts": [m.to_wire() for m in self.mounts], "namespaces": self.namespaces.to_wire()}

    @classmethod
    def from_wire(cls, raw: dict) -> ShimCreate:
        p = Params("create", raw)
        mounts = raw.get("mounts") or []
        if not isinstance(mounts, list):
            raise InvalidArgument("create: parameter 'mounts' must be a list")
        return cls(spec=ContainerSpec.from_wire(p.map("spec", required=True)),
                   network=plans.NetworkPlan.from_wire(p.map("network")),
                   mounts=[plans.MountPlan.from_wire(m) for m in mounts],
                   namespaces=plans.NamespacePlan.from_wire(p.map("namespaces")),
                   **{f.name: p.str(f.name, required=True) for f in fields(cls) if f.type == "str"})
