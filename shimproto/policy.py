"""A container's restart policy and health check as docker words them, parsed and checked once for the CLI, the
manager and the shim, and the rules each of them applies the same way.

Restart policy (`--restart`): `no`, `on-failure[:MAX]` (non-zero exits only, at most MAX restarts; none or 0:
unbounded), `always`, `unless-stopped`. A stop, a kill or `rm -f` by the user ends its care until the next user
start (`stops_policy`, docker's rule). After a reboot `always` is started again even if the user had stopped it,
`unless-stopped` only if the user had not (docker's "restarted when the daemon restarts").

Health check: docker's config map, as an image's `config.Healthcheck` holds it and as `--health-*` fill it:
{Test, Interval, Timeout, StartPeriod, Retries}; Test is [] (the image's), ["NONE"], ["CMD", arg...] or
["CMD-SHELL", text]; durations are nanoseconds, 0 meaning docker's default.
"""

from __future__ import annotations

import signal as _signal
from dataclasses import dataclass

from .errors import InvalidArgument
from .model import parse_signal

NO, ON_FAILURE, ALWAYS, UNLESS_STOPPED = "no", "on-failure", "always", "unless-stopped"
POLICIES = (NO, ON_FAILURE, ALWAYS, UNLESS_STOPPED)

# back-off between runs: doubles from FIRST up to LONGEST; a run that lasted RESET seconds starts it over
BACKOFF_FIRST = 0.1
BACKOFF_LONGEST = 60.0
BACKOFF_RESET = 10.0

HEALTH_KEYS = ("Test", "Interval", "Timeout", "StartPeriod", "Retries")
SECOND = 10**9
DEFAULT_INTERVAL = 30 * SECOND
DEFAULT_TIMEOUT = 30 * SECOND
DEFAULT_RETRIES = 3
MIN_DURATION = 10**6  # docker's: 1 ms, when given at all


@dataclass(frozen=True)
class RestartPolicy:
    name: str = NO
    max_retries: int = 0  # on-failure only; 0: no bound

    @classmethod
    def parse(cls, text: str) -> RestartPolicy:
        name, sep, count = (text or NO).partition(":")
        if name not in POLICIES:
            raise InvalidArgument(f"invalid restart policy {text!r}: use no, on-failure[:MAX], always or "
                                  f"unless-stopped")
        if sep and name != ON_FAILURE:
            raise InvalidArgument(f"invalid restart policy {text!r}: only on-failure takes a maximum")
        if sep and not (count.isascii() and count.isdigit() and len(count) < 10):
            raise InvalidArgument(f"invalid restart policy {text!r}: the maximum must be a number >= 0")
        return cls(name, int(count) if sep else 0)

    def __str__(self) -> str:
        return f"{self.name}:{self.max_retries}" if self.name == ON_FAILURE and self.max_retries else self.name

    def restarts(self, code: int, retries: int, by_user: bool) -> bool:
        """Does an exit with code, after `retries` restarts since the user last started it, ask for a new run?"""
        if by_user or self.name == NO:
            return False
        if self.name == ON_FAILURE:
            return code != 0 and (self.max_retries == 0 or retries < self.max_retries)
        return True

    def after_reboot(self, by_user: bool) -> bool:
        """Is the container started again when the host (and so its shim) went away?"""
        return self.name == ALWAYS or (self.name == UNLESS_STOPPED and not by_user)


def stops_policy(sig: int, stop_signal: str) -> bool:
    """docker's rule for a user's kill of the container: it ends the policy's care (the exit it causes is not
    restarted) when the container has no stop signal of its own, or the signal is SIGKILL or that stop signal;
    any other signal (a reload's SIGHUP to a container that stops on SIGQUIT) leaves the policy in charge."""
    return not stop_signal or sig == _signal.SIGKILL or sig == parse_signal(stop_signal)


def check_restart(text: str, auto_remove: bool) -> None:
    if RestartPolicy.parse(text).name != NO and auto_remove:
        raise InvalidArgument("conflicting options: a restart policy and auto-remove (--rm)")


@dataclass(frozen=True)
class HealthCheck:
    """A health check in force: the command to run (None: no check) and its timings in seconds."""

    args: list[str] | None
    interval: float = DEFAULT_INTERVAL / SECOND
    timeout: float = DEFAULT_TIMEOUT / SECOND
    start_period: float = 0.0
    retries: int = DEFAULT_RETRIES

    @classmethod
    def of(cls, raw: dict | None) -> HealthCheck:
        """The check a (checked, image-merged) config map asks for."""
        test = list((raw or {}).get("Test") or [])
        if not test or test[0] == "NONE":
            return cls(None)
        args = ["/bin/sh", "-c", test[1]] if test[0] == "CMD-SHELL" else test[1:]
        r = raw or {}
        return cls(args, (r.get("Interval") or DEFAULT_INTERVAL) / SECOND,
                   (r.get("Timeout") or DEFAULT_TIMEOUT) / SECOND, (r.get("StartPeriod") or 0) / SECOND,
                   r.get("Retries") or DEFAULT_RETRIES)


def check_health(raw: object, what: str = "healthcheck") -> dict | None:
    """A health config map checked field by field (None stays None); a copy with docker's keys only."""
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise InvalidArgument(f"{what} must be a map")
    test = raw.get("Test") or []
    if not isinstance(test, list) or not all(isinstance(x, str) for x in test):
        raise InvalidArgument(f"{what}: Test must be a list of strings")
    if test and (test[0] not in ("NONE", "CMD", "CMD-SHELL") or test[0] == "CMD-SHELL" and len(test) != 2
                 or test[0] == "CMD" and len(test) < 2 or test[0] == "CMD-SHELL" and not test[1].strip()):
        raise InvalidArgument(f"{what}: Test must be [\"NONE\"], [\"CMD\", ARG...] or [\"CMD-SHELL\", COMMAND]")
    out: dict = {"Test": list(test)}
    for key in HEALTH_KEYS[1:]:
        v = raw.get(key) or 0
        if not isinstance(v, int) or isinstance(v, bool) or v < 0:
            raise InvalidArgument(f"{what}: {key} must be a number >= 0")
        if key != "Retries" and 0 < v < MIN_DURATION:
            raise InvalidArgument(f"{what}: {key} must be at least 1ms")
        out[key] = v
    return out


def merge_health(own: dict | None, image: object) -> dict | None:
    """docker's merge: the container's own settings win; its empty Test and zero fields take the image's."""
    base = check_health(image, "image config: Healthcheck") if image else None
    if own is None or base is None:
        return own if own is not None else base
    return {k: own.get(k) or base.get(k) or (0 if k != "Test" else []) for k in HEALTH_KEYS}
