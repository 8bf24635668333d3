"""The one request model of a container: what a user asks for, written once.

The CLI builds a ContainerSpec from its flags and sends `spec.to_wire()` as the `spec` param of `create`; the manager
validates it with `ContainerSpec.from_wire` (every bad field is an InvalidArgument that names it), keeps it in the
container's metadata, and hands the same wire form to the shim inside its create request (ShimCreate), with the
paths only the manager knows. Nothing renames a field on the way.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

from . import plans, policy
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
    restart: str = ""  # docker's --restart text ("" : no); shimproto.policy
    healthcheck: dict | None = None  # docker's health config map (None: the image's); shimproto.policy

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

    def to_wire(self) -> dict:
        return {**{f.name: getattr(self, f.name) for f in fields(self) if f.type == "str"},
                "spec": self.spec.to_wire(), "network": self.network.to_wire(),
                "mounts": [m.to_wire() for m in self.mounts]}

    @classmethod
    def from_wire(cls, raw: dict) -> ShimCreate:
        p = Params("create", raw)
        mounts = raw.get("mounts") or []
        if not isinstance(mounts, list):
            raise InvalidArgument("create: parameter 'mounts' must be a list")
        return cls(spec=ContainerSpec.from_wire(p.map("spec", required=True)),
                   network=plans.NetworkPlan.from_wire(p.map("network")),
                   mounts=[plans.MountPlan.from_wire(m) for m in mounts],
                   **{f.name: p.str(f.name, required=True) for f in fields(cls) if f.type == "str"})
