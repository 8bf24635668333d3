"""create {spec, start?, key?} -> inspect

spec is shimproto.spec.ContainerSpec's wire form: {args, id?, image? | rootfs?, env?, cwd?, hostname?, tty?,
stdin?, memory_limit?, pids_limit?, log_max_size?, log_max_files?, auto_remove?}. Makes a container: validates the
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
    if spec.log_max_size is None:
        spec.log_max_size = m.defaults.log_max_size
    if spec.log_max_files is None:
        spec.log_max_files = m.defaults.log_max_files
    spec.network = spec.network or m.defaults.network
    e = await lifecycle.create(m, spec, p.bool("start"), request_key(p))
    return await m.inspect(e)
