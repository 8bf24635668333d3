"""An image's config applied to a container's spec as docker applies it (a pure function of both).

Command: Entrypoint + Cmd. `--entrypoint X` replaces the Entrypoint and drops the image's Cmd (docker's rule);
CMD given on the command line replaces Cmd. Env: the image's, then -e replacing by name, PATH added when neither
has one. WorkingDir, User and StopSignal when the command line gave none; Labels under the command line's;
Healthcheck under the command line's `--health-*` (shimproto.policy.merge_health: its Test and timings fill what
they left out; `--no-healthcheck` drops it).
"""

from __future__ import annotations

from runtime.bundle import merge_env
from shimproto.errors import InvalidArgument
from shimproto.model import parse_signal
from shimproto.policy import merge_health
from shimproto.spec import ContainerSpec

DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def _strlist(c: dict, key: str) -> list[str]:
    v = c.get(key)
    if v is None:
        return []
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise InvalidArgument(f"image config: {key} is not a list of strings")
    return v


def with_path(env: list[str]) -> list[str]:
    return env if any(e.startswith("PATH=") for e in env) else [DEFAULT_PATH, *env]


def apply(spec: ContainerSpec, image_config: dict) -> None:
    """Fill spec (in place) from the config blob's `config` map: afterwards spec is what the shim runs."""
    c = image_config.get("config") or {}
    if not isinstance(c, dict):
        raise InvalidArgument("image config: `config` is not a map")
    if spec.entrypoint is not None:
        entry, cmd = spec.entrypoint, spec.args
    else:
        entry, cmd = _strlist(c, "Entrypoint"), spec.args or _strlist(c, "Cmd")
    spec.args = [*entry, *cmd]
    if not spec.args:
        raise InvalidArgument(f"no command specified: image {spec.image} has no Entrypoint or Cmd and none was "
                              f"given")
    spec.entrypoint = None  # folded into args: what runs is spec.args alone from here on
    spec.env = with_path(merge_env(_strlist(c, "Env"), spec.env))
    spec.cwd = spec.cwd or str(c.get("WorkingDir") or "") or "/"
    if not spec.cwd.startswith("/"):
        raise InvalidArgument(f"working directory {spec.cwd!r} must be an absolute path")
    spec.user = spec.user or str(c.get("User") or "")
    spec.healthcheck = merge_health(spec.healthcheck, c.get("Healthcheck"))
    spec.stop_signal = spec.stop_signal or str(c.get("StopSignal") or "")
    labels = c.get("Labels") or {}
    spec.labels = {**{str(k): str(v) for k, v in labels.items()}, **spec.labels} if isinstance(labels, dict) \
        else dict(spec.labels)
    if spec.stop_signal:
        try:
            parse_signal(spec.stop_signal)
        except InvalidArgument:
            raise InvalidArgument(f"invalid stop signal {spec.stop_signal!r}") from None
