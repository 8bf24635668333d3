"""The protocol version spoken between the manager and its shims, answered by both in `ping`.

Bump PROTOCOL when a shim method or reply changes shape. A manager reattaches to every shim whose protocol is at
least MIN_SHIM_PROTOCOL: a shim keeps running across a manager upgrade, so the newer manager must keep speaking the
older shims' protocol until they are gone. A `ping` reply without "protocol" is from a shim older than the field:
protocol 1 (the release 298a60d and before).
"""

PROTOCOL = 2
MIN_SHIM_PROTOCOL = 1

# the warm template's exit code when this host will not let a forked shim carry a cold shim's command line
# (shimd/template.py); the manager (manager/launcher.py) then stops starting templates and starts shims cold
TEMPLATE_CANNOT_RENAME = 3


def of_ping(reply: object) -> int:
    """The protocol version a `ping` reply says its sender speaks (1 when it does not say)."""
    if isinstance(reply, dict) and isinstance(reply.get("protocol"), int):
        return int(reply["protocol"])
    return 1
