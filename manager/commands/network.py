"""Networks (manager/networks.py): definitions only; containers attach through their shims.

- network_create {name, subnet?} -> network: a bridge network; the next free 10.89.N.0/24 without subnet.
  Errors: invalid_argument (bad name or subnet, a reserved name, an overlap), already_exists.
- network_list {} -> [network, ...], each {name, subnet, gateway, bridge, created_at, containers}.
- network_inspect {name} -> network. `bridge` is made on first use. Errors: not_found.
- network_remove {name}: refused while a container (of any status) is on it (invalid_state). Errors: not_found.
"""

from __future__ import annotations

from shimproto.model import rfc3339

from .. import attach
from ..networks import Network
from ..registry import Registry
from .named import handlers


def _view(m: Registry, n: Network) -> dict:
    return {**n.to_json(), "created_at": rfc3339(n.created_at), "containers": attach.network_users(m, n.name)}


HANDLERS = handlers("network", lambda m: m.networks, _view, attach.network_users, create_params=("subnet",))
