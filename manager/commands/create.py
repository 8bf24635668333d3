"""create {spec, start?, key?} -> inspect

spec is shimproto.spec.ContainerSpec's wire form: {args, id?, image? | rootfs?, env?, cwd?, hostname?, tty?,
stdin?, memory_limit?, pids_limit?, log_max_size?, log_max_files?, auto_remove?, ...} (every field: the class).
What a pod's containers need (a CRI server sends these; shimproto/pod.py checks them):
  ipc, pid, uts: "" a namespace of the container's own; "host" the host's; "container:ID" the namespace of running
    container ID (invalid_state when it is not running). uts not its own: the hostname is that namespace's (so
    hostname may not be given). network "container:ID" shares ID's /etc/hostname, hosts and resolv.conf too, each
    unless the joining container asks for its own (hostname, add_hosts, dns/dns_search/dns_options).
  masked_paths, readonly_paths: null: the defaults; a list of absolute paths replaces them ([] : none).
  group_add: gids or group names of the container's /etc/group, after the user's own groups.
  oom_score_adj: -1000..1000; raised to the shim's own when the shim may not lower it (no CAP_SYS_RESOURCE).
  log_path: the CRI log at this absolute path (its directory must exist), never rotated by size (the client
    rotates it and calls reopen_log), never removed by delete.
  dns_search, dns_options: resolv.conf's search and options lines (nameservers: dns, else the host's).
  conflist: a CNI conflist ({cniVersion, name, plugins: [{type, ...}]}, or one plugin's .conf) instead of a
    named network; network must be "". publish works through its portmap plugin.
  volumes: /host:/ctr[:ro|rw][,PROPAGATION] with rshared, rslave, rprivate (and shared, slave, private).
  sysctls: net.* unless network host; the ipc ones (kernel.shm*, kernel.msg*, kernel.sem, fs.mqueue.*) unless
    ipc host.
Makes a container: validates the
spec, records a create intent, writes its metadata, launches its shim, has the shim create it (and start it when
start is true), then clears the intent. On failure everything made so far is undone; if the manager dies midway,
the next one rolls the create back. Without an id the manager picks one (from the key when there is one, so a
repeat names the same container); a repeat of a create that finished returns that container. Errors:
invalid_argument (bad id or spec, rootfs not a directory, both/neither image and rootfs), already_exists (id in
use), not_found (unknown image), runtime_failed (runc refused), command_not_found, cannot_invoke.
"""

from __future__ import annotations

from shimproto.spec import ContainerSpec
from shimproto.wire import Params

from .. import lifecycle
from ..registry import Registry
from .params import request_key

NAME = "create"


async def handle(m: Registry, p: Params) -> dict:
    spec = ContainerSpec.from_wire(p.map("spec", required=True))
    if spec.log_max_size is None:  # a log at a client's log_path is rotated by that client (kubelet)
        spec.log_max_size = 0 if spec.log_path else m.defaults.log_max_size
    if spec.log_max_files is None:
        spec.log_max_files = m.defaults.log_max_files
    if spec.conflist is None:
        spec.network = spec.network or m.defaults.network
    e = await lifecycle.create(m, spec, p.bool("start"), request_key(p))
    return await m.inspect(e)
