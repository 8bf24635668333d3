"""export {id} -> {stream}: the container's root filesystem as a tar (docker export), read with export_read.

The tar is the overlay as the container sees it (its image's layers or --rootfs tree under its writable layer),
read from disk by the manager, never mounted (manager/images/rootfs.py): whiteouts and opaque directories applied,
owners, modes, links, device nodes, xattrs and mtimes kept, mounts (/proc, /dev, volumes, the bind-mounted
/etc/hostname, hosts and resolv.conf) not included. A container in any state may be exported; a running one is
read as it is (files changing meanwhile are taken as found). Errors: not_found.
"""

from __future__ import annotations

from shimproto.wire import Params

from ..registry import Registry

NAME = "export"


async def handle(m: Registry, p: Params) -> dict:
    from ..images import rootfs  # only export pays for tarfile: a manager's start does not

    e = m.get(p.str("id", required=True))
    layers = [m.store.fs(e.id)[0], *(d for d in e.meta.lower.split(":") if d)]
    sid = m.streams.start(f"export of {e.id}", lambda out: rootfs.write(rootfs.merged(layers), out))
    return {"stream": sid}
