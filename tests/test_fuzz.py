"""Property-based fuzzing of the wire protocol: random frames thrown at a live manager socket and a live shim socket.

Inputs (hypothesis): random bytes; random msgpack values (scalars, lists, maps with random keys, deep nesting);
requests whose "method" is a real method name and whose params are a random mix of well-typed and wrong-typed
values (and a dictionary of edge cases: unicode digits, NaN/inf, int64 limits, ids of the wrong shape); strings
sized so the whole frame is at or just under the 8 MiB limit; and multipart messages of 2-3 frames. Inputs that
broke a server once are replayed first as explicit examples (`seeds`).

Property: every message gets exactly one reply, within a deadline, no larger than MAX_MESSAGE, carrying the
request's id when one could be read (an id that is not an int may instead be answered with null). The reply is a
result (only for a well-formed request of a known method) or an error whose code is one of invalid_argument,
not_found, invalid_state, already_exists: a bad frame is never "internal" (nor a timeout or a lost connection).
After a bad reply the test checks the server still works (and restarts a manager that lost its shim, so the run
goes on and teardown can clean up). At the end the server still serves and the container still runs with the same
pid. Bad replies are collected and reported together, each with its smallest input, plus the first traceback of
the server's log.

Nothing destructive is ever sent with params that would be accepted: kill, delete, shutdown, exec, update, pause,
stop and create requests that would act on the container are "defused" (one of their params gets the wrong type),
and long polls get a short timeout (negative ones are sent as they are; NaN is left to its own test).
SHIMD_FUZZ_EXAMPLES=N sets the number of examples per server (300).

test_oversized_frame_drops_only_that_connection sends a frame over ZMQ_MAXMSGSIZE (9 MiB): zmq drops that
connection, and other and new ones are served. test_a_nan_timeout_does_not_hold_up_other_clients keeps out a bug
the fuzzing found (a NaN long-poll timeout disturbed the server's timers for every client).
"""

from __future__ import annotations

import math
import os
import re
import signal
import time
from dataclasses import dataclass

import hypothesis
import msgpack
import psutil
import pytest
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shimproto.client import Client
from shimproto.errors import InvalidArgument, ShimdError
from shimproto.model import parse_signal
from shimproto.wire import MAX_MESSAGE
from tests.harness import REPO, wait_for

ALLOWED = {"invalid_argument", "not_found", "invalid_state", "already_exists"}
REPLY_TIMEOUT_MS = 20_000  # longer than the manager's own 10 s call timeout to a shim, so we see what it answers
STRAY_MS = 5
INT_MIN, INT_MAX = -(2**63), 2**64 - 1  # what msgpack carries
LONG_POLL_MAX = 0.5  # a long-poll timeout above this is replaced by SHORT_POLL
SHORT_POLL = 0.05

FUZZ = settings(max_examples=int(os.environ.get("SHIMD_FUZZ_EXAMPLES", "300")), deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                       HealthCheck.data_too_large, HealthCheck.large_base_example])

# --- what each server accepts (name -> type as shimproto.wire.Params reads it, or a schema for a map) -------------
# test_the_fuzz_schemas_are_exactly_what_the_handlers_read checks these against the running handlers.

SPEC_SCHEMA: dict[str, str] = {  # shimproto.spec.ContainerSpec, the `spec` map of both creates
    "args": "strlist", "id": "str", "image": "str", "rootfs": "str", "env": "strlist", "cwd": "str",
    "hostname": "str", "tty": "bool", "stdin": "bool", "memory_limit": "int", "pids_limit": "int",
    "log_max_size": "int", "log_max_files": "int", "auto_remove": "bool", "entrypoint": "strlist", "user": "str",
    "stop_signal": "str", "labels": "map", "network": "str", "publish": "strlist", "volumes": "strlist",
    "tmpfs": "strlist", "read_only": "bool", "add_hosts": "strlist", "dns": "strlist", "nano_cpus": "int",
    "cpu_shares": "int", "memory_swap": "int", "shm_size": "int", "cap_add": "strlist", "cap_drop": "strlist",
    "privileged": "bool", "security_opt": "strlist", "init": "bool", "stop_timeout": "int", "ulimits": "strlist",
    "devices": "strlist", "sysctls": "map", "restart": "str", "healthcheck": "map",
    "ipc": "str", "pid": "str", "uts": "str", "masked_paths": "strlist", "readonly_paths": "strlist",
    "group_add": "strlist", "oom_score_adj": "int", "log_path": "str", "dns_search": "strlist",
    "dns_options": "strlist", "conflist": "map", "cni_bin_dir": "str",  # shimproto/pod.py: a CRI pod's fields
}
# shimproto.plans.NetworkPlan (lists of maps fuzzed as lists of strings)
NETWORK_PLAN = {"mode": "str", "network": "str", "conflist": "map", "ports": "strlist", "join": "str",
                "peers": "strlist", "files": "str", "path": "str"}

NAMESPACE_PLAN = {"ipc": "str", "pid": "str", "uts": "str", "hostname": "str"}  # shimproto.plans.NamespacePlan

KEYED = {"key": "str"}  # a mutating call's request key (every manager call reads it; a shim's mutating ones)

SHIM_SCHEMA: dict[str, dict] = {
    "create": {"spec": SPEC_SCHEMA, "lower": "str", "upper": "str", "work": "str", "log_path": "str",
               "cgroups_path": "str", "files_dir": "str", "network": NETWORK_PLAN, "mounts": "strlist",
               "namespaces": NAMESPACE_PLAN, **KEYED},
    "state": {}, "pids": {}, "stats": {}, "reopen_log": {}, "ping": {},
    "start": KEYED, "pause": KEYED, "resume": KEYED,
    "restart": {"start": "bool", **KEYED},
    "kill": {"signal": "signal", "all": "bool", "exec_id": "str", **KEYED},
    "exec": {"exec_id": "str", "args": "strlist", "env": "strlist", "cwd": "str", "terminal": "bool",
             "stdin": "bool", "attach": "bool", "user": "str", **KEYED},
    "write_stdin": {"exec_id": "str", "data": "bytes", **KEYED},
    "close_stdin": {"exec_id": "str", **KEYED},
    "resize": {"rows": "int", "cols": "int", "exec_id": "str", **KEYED},
    "update": {"memory_limit": "int", "pids_limit": "int", "restart": "str", **KEYED},
    "wait": {"exec_id": "str", "timeout": "float", "run": "int"},
    "hosts": {"peers": "strlist", **KEYED},
    "logs": {"exec_id": "str", "cursor": "int", "follow": "bool", "timeout": "float", "max_bytes": "int",
             "tail": "int", "since": "int", "until": "int", "timestamps": "bool"},
    "events": {"since": "int", "timeout": "float"},
    "delete": {"exec_id": "str", "since": "int", **KEYED},
    "shutdown": {"force": "bool", **KEYED},
}

MANAGER_SCHEMA: dict[str, dict] = {name: {**params, **KEYED} for name, params in {
    "create": {"spec": SPEC_SCHEMA, "start": "bool"},
    "start": {"id": "str"}, "inspect": {"id": "str"}, "list": {"all": "bool"}, "ping": {},
    "version": {}, "info": {},
    "kill": {"id": "str", "signal": "signal", "all": "bool", "exec_id": "str"},
    "wait": {"id": "str", "exec_id": "str", "timeout": "float", "run": "int"},
    "logs": {"id": "str", "exec_id": "str", "cursor": "int", "follow": "bool", "timeout": "float", "tail": "int",
             "since": "int", "until": "int", "timestamps": "bool", "max_bytes": "int"},
    "delete": {"id": "str", "force": "bool", "exec_id": "str"},
    "exec": {"id": "str", "args": "strlist", "exec_id": "str", "env": "strlist", "cwd": "str", "tty": "bool",
             "stdin": "bool", "detach": "bool", "user": "str"},
    "pause": {"id": "str"}, "unpause": {"id": "str"}, "stats": {"id": "str"}, "top": {"id": "str"},
    "reopen_log": {"id": "str"},
    "update": {"id": "str", "memory_limit": "int", "pids_limit": "int", "restart": "str"},
    "network_create": {"name": "str", "subnet": "str"}, "network_list": {}, "network_inspect": {"name": "str"},
    "network_remove": {"name": "str"}, "volume_create": {"name": "str"}, "volume_list": {},
    "volume_inspect": {"name": "str"}, "volume_remove": {"name": "str"},
    "pull": {"ref": "str", "tls_verify": "bool", "authfile": "str", "platform": "str", "registries_conf": "str"},
    "push": {"ref": "str", "dest": "str", "tls_verify": "bool", "authfile": "str"},
    "images": {}, "image_inspect": {"ref": "str"}, "image_remove": {"ref": "str", "force": "bool"},
    "image_prune": {"all": "bool"}, "image_tag": {"source": "str", "target": "str"},
    "image_import": {"path": "str", "tag": "str", "platform": "str", "ref": "str"},
    "image_save": {"ref": "str", "path": "str", "format": "str"},
    "export": {"id": "str"}, "export_read": {"stream": "str", "wait": "float"}, "transfers": {"ref": "str"},
    "commit": {"id": "str", "ref": "str", "comment": "str", "author": "str", "pause": "bool"},
    "write_stdin": {"id": "str", "exec_id": "str", "data": "bytes"},
    "close_stdin": {"id": "str", "exec_id": "str"},
    "resize": {"id": "str", "exec_id": "str", "rows": "int", "cols": "int"},
    "events": {"id": "str", "since": "int", "timeout": "float"},
    "stop": {"id": "str", "timeout": "float"},
    "restart": {"id": "str", "timeout": "float"},
}.items()}

LONG_POLLS = {"wait", "logs", "events"}  # their timeout is kept short (stop's is a grace period: defused instead)


def shim_methods() -> set[str]:
    from shimd.service import ShimService

    return set(ShimService(None).handlers())  # type: ignore[arg-type]


def manager_methods() -> set[str]:
    from manager.commands import methods

    return methods()


# --- values ---------------------------------------------------------------------------------------------------------

EDGE_STRINGS = ["", " ", "0", "-1", "9", " 15 ", "KILL", "SIGKILL", "sigterm", "SIGNOPE", "²", "٣", "①", "𝟗",
                "1e3", "0x9", "NaN", "..", "../x", "/", "/proc", "/nonexistent", "a/b", "-x", ".hidden",
                "a" * 64, "a" * 65, "\x00", "a\x00b", "é", "\u202e", "None", "[]"]
EDGE_INTS = [0, 1, -1, 2, 9, 15, 64, 65, 2**31 - 1, 2**31, 2**32, 2**40, 2**63 - 1, 2**63, INT_MAX, INT_MIN,
             65535, 65536, 4 * 1024 * 1024 - 1]
EDGE_SIGNALS = ["²", "٣", "①", "𝟗", "¹⁵", "0", "65", "-9", "9.0", "+9", " 9", "SIG", "SIGRTMIN", "RTMIN+1",
                "SIGCLD", "IOT", "kill", "Kill", "SIGKILL ", "\tTERM", 0, 65, -9, 2**63, 9.0]
EDGE_FLOATS = [math.nan, math.inf, -math.inf, -0.0, 1e308, -1e308, 5e-324, 0.5, -0.5, 61.0]

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(INT_MIN, INT_MAX), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40), st.binary(max_size=40), st.sampled_from(EDGE_STRINGS), st.sampled_from(EDGE_INTS),
    st.sampled_from(EDGE_FLOATS),
)
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)), max_leaves=12)
texts = st.one_of(st.text(max_size=30), st.sampled_from(EDGE_STRINGS))
ints = st.one_of(st.integers(INT_MIN, INT_MAX), st.sampled_from(EDGE_INTS), st.integers(-5, 70))
floats = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.sampled_from(EDGE_FLOATS),
                   st.integers(-5, 70), st.floats(0, 1))

TYPED = {
    "str": texts, "int": ints, "float": floats, "bool": st.booleans(), "bytes": st.binary(max_size=64),
    "strlist": st.lists(texts, max_size=4), "map": st.dictionaries(st.text(max_size=8), values, max_size=3),
    "signal": st.one_of(st.sampled_from(EDGE_SIGNALS), ints, texts, floats),
}

ABSENT = object()


def typed_ok(value: object, kind: str | dict) -> bool:
    """Would shimproto.wire.Params accept value for a parameter of this kind (None counts as absent)? A kind that
    is a schema is a map whose own params must pass."""
    if isinstance(kind, dict):
        return value is None or (isinstance(value, dict) and accepted(value, kind))
    if kind == "signal":
        try:
            parse_signal(value)
        except InvalidArgument:
            return False
        except Exception:  # a crash in validation is a finding, never something to defuse
            return False
        return True
    if value is None:
        return True
    if kind == "str":
        return isinstance(value, str)
    if kind == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "float":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "bytes":
        return isinstance(value, bytes)
    if kind == "strlist":
        return isinstance(value, list) and all(isinstance(x, str) for x in value)
    if kind == "map":
        return isinstance(value, dict)
    return True


def accepted(params: dict, schema: dict, defaults: dict | None = None) -> bool:
    """True when every parameter the handler reads would pass its type check (absent: the default)."""
    for key, kind in schema.items():
        if key in params:
            if not typed_ok(params[key], kind):
                return False
        elif kind == "signal" and not typed_ok((defaults or {}).get(key, 15), kind):
            return False
    return True


def long_poll_safe(params: dict) -> None:
    """A long poll must answer quickly. NaN is left to test_a_nan_timeout_does_not_hold_up_other_clients: a
    regression there would wedge the server's timer heap, and with it the rest of this run."""
    t = params.get("timeout")
    if t is None or (isinstance(t, (int, float)) and not isinstance(t, bool) and
                     (math.isnan(t) or t > LONG_POLL_MAX)):
        params["timeout"] = SHORT_POLL


def defuse(target: str, method: str, params: dict, real_id: str) -> object:
    """Make sure a request can never destroy or change the container: give one param a wrong type when the
    request would otherwise be carried out. Returns the params to send (a non-map for pause)."""
    schema = (SHIM_SCHEMA if target == "shim" else MANAGER_SCHEMA)[method]
    params = dict(params)
    if method in LONG_POLLS:
        long_poll_safe(params)
    on_real = target == "shim" or params.get("id") == real_id
    ok = accepted(params, schema, {"signal": "KILL" if target == "manager" else 15})
    if method == "kill" and on_real and ok and not params.get("exec_id"):
        params["all"] = "defused"
    elif method == "exec" and on_real and ok:
        params["args"] = 0
    elif method == "create" and target == "manager" and ok and isinstance(params.get("spec"), dict):
        params["spec"] = {**params["spec"], "args": 0}
    elif method == "update" and on_real and ok:
        params["memory_limit"] = "defused"
    elif method in ("stop", "restart") and target == "manager" and on_real and ok:
        params["timeout"] = "defused"
    elif method == "restart" and target == "shim" and ok:
        params["start"] = "defused"
    elif method == "delete" and on_real:
        exec_id = params.get("exec_id")
        if isinstance(exec_id, str) and exec_id:
            pass  # no such exec process: not_found
        elif target == "shim" and typed_ok(exec_id, "str"):
            params["exec_id"] = 0
        elif target == "manager" and params.get("force") is True:
            params["force"] = "defused"
    elif method == "shutdown" and params.get("force") is True:
        params["force"] = "defused"
    elif method == "pause" and on_real:
        if target == "shim":
            return "defused"
        params["id"] = 0
    return params


# --- frames ---------------------------------------------------------------------------------------------------------


@dataclass
class Target:
    name: str  # "manager" or "shim"
    path: str
    real_id: str
    methods: list[str]


def draw_params(draw, schema: dict, real_id: str) -> dict:  # type: ignore[no-untyped-def]
    """A params map for schema: each name absent, well typed or anything; a map-typed one drawn the same way."""
    params: dict = {}
    for key, kind in schema.items():
        choice = draw(st.sampled_from(["absent", "typed", "typed", "random"]))
        if choice == "absent":
            continue
        if key == "id" and schema is not SPEC_SCHEMA and draw(st.integers(0, 2)) > 0:
            params[key] = real_id  # mostly aim at the real container, or it is only ever not_found
        elif choice == "typed":
            params[key] = draw_params(draw, kind, real_id) if isinstance(kind, dict) else draw(TYPED[kind])
        else:
            params[key] = draw(values)
    params.update(draw(st.dictionaries(st.text(max_size=8), values, max_size=2)))
    return params


@st.composite
def method_requests(draw, t: Target) -> dict:
    """{"id", "method": a real method, "params": a random mix of right and wrong types}."""
    method = draw(st.sampled_from(t.methods))
    schema = (SHIM_SCHEMA if t.name == "shim" else MANAGER_SCHEMA)[method]
    params = draw_params(draw, schema, t.real_id)
    msg: dict = {"id": draw(st.one_of(st.integers(0, 2**31), values)), "method": method}
    if draw(st.integers(0, 9)) == 0:
        msg["params"] = draw(values)  # not a map, or a map of anything
    elif draw(st.integers(0, 9)) > 0:
        msg["params"] = params
    wire_params = msg.get("params", {})
    if isinstance(wire_params, dict):
        sent = defuse(t.name, method, wire_params, t.real_id)
        if "params" in msg or sent != {}:
            msg["params"] = sent
    return msg


def _frame_of_size(template: dict, path: tuple, size: int, kind: str) -> bytes:
    """template with the value at path replaced by a str (or bin) sized so the whole frame is exactly size bytes."""
    def put(v: object) -> dict:
        d = msgpack.unpackb(msgpack.packb(template, use_bin_type=True), raw=False)
        node = d
        for k in path[:-1]:
            node = node[k]
        if path[-1] is None:  # the method name itself
            d["method"] = v
        else:
            node[path[-1]] = v
        return d

    make = (lambda n: "x" * n) if kind == "str" else (lambda n: b"x" * n)
    n = size - len(msgpack.packb(put(make(0)), use_bin_type=True))
    for _ in range(3):  # the length header grows with the string: settle on the exact size
        frame = msgpack.packb(put(make(n)), use_bin_type=True)
        n += size - len(frame)
    assert len(frame) == size, (len(frame), size)
    return frame


@st.composite
def near_limit_frames(draw, t: Target) -> bytes:
    """A request just at or under the 8 MiB limit: one huge string in the method, the id or a param."""
    size = MAX_MESSAGE - draw(st.sampled_from([0, 1, 7, 4096]))
    method = draw(st.sampled_from(t.methods))
    where = draw(st.sampled_from(["method", "rid", "param", "extra"]))
    schema = (SHIM_SCHEMA if t.name == "shim" else MANAGER_SCHEMA)[method]
    params: dict = {}
    if "id" in schema:
        params["id"] = t.real_id
    key, kind = "", "str"
    if where in ("param", "extra"):
        str_keys = [k for k, kd in schema.items() if kd in ("str", "bytes", "signal")]
        if where == "param" and str_keys:
            key = draw(st.sampled_from(str_keys))
            kind = "bin" if schema[key] == "bytes" else "str"
        else:
            key, kind = "zz-extra", draw(st.sampled_from(["str", "bin"]))
        params[key] = "" if kind == "str" else b""
    safe = defuse(t.name, method, params, t.real_id)  # the padding keeps each param's type, so this holds
    if not isinstance(safe, dict):  # shim pause: no params can make it harmless; pad the id instead
        where = "rid"
    if where == "method":
        return _frame_of_size({"id": 1, "method": "", "params": safe}, (None,), size, "str")
    if where == "rid":
        return _frame_of_size({"id": "", "method": method, "params": safe}, ("id",), size, "str")
    return _frame_of_size({"id": 1, "method": method, "params": safe}, ("params", key), size, kind)


def deep_frame(depth: int, in_id: bool) -> bytes:
    """A request with a list nested depth levels deep (as raw msgpack: deeper than msgpack.packb will go) in its
    id or in a param; msgpack's unpacker refuses more than 1024 levels."""
    nest = b"\x91" * depth + b"\x00"
    pk = lambda v: msgpack.packb(v, use_bin_type=True)  # noqa: E731
    if in_id:
        return b"\x83" + pk("id") + nest + pk("method") + pk("ping") + pk("params") + pk({})
    return b"\x83" + pk("id") + pk(1) + pk("method") + pk("ping") + pk("params") + b"\x81" + pk("x") + nest


def make_safe(t: Target, v: object) -> object:
    """Defuse any map that happens to be a request of a real method (whatever strategy made it)."""
    schema = SHIM_SCHEMA if t.name == "shim" else MANAGER_SCHEMA
    if isinstance(v, dict) and isinstance(v.get("method"), str) and v["method"] in schema:
        params = v.get("params", {})
        if isinstance(params, dict):
            return {**v, "params": defuse(t.name, v["method"], params, t.real_id)}
    return v


def single_frames(t: Target) -> st.SearchStrategy[bytes]:
    pack = lambda v: msgpack.packb(make_safe(t, v), use_bin_type=True)  # noqa: E731
    requests = method_requests(t).map(pack)
    return st.one_of(
        requests, requests, requests,  # most examples are requests of a real method
        st.binary(max_size=256),
        values.map(pack),
        st.dictionaries(st.text(max_size=10), values, max_size=6).map(pack),
        st.fixed_dictionaries({"id": values, "method": st.one_of(texts, st.sampled_from(t.methods), values),
                               "params": values}).map(pack),
        st.builds(deep_frame, st.integers(1015, 1030), st.booleans()),
        near_limit_frames(t),
    )


def multipart_frames(t: Target) -> st.SearchStrategy[list[bytes]]:
    part = st.one_of(st.binary(max_size=64), st.just(b""),
                     st.just(msgpack.packb({"id": 7, "method": "ping", "params": {}})),
                     values.map(lambda v: msgpack.packb(make_safe(t, v), use_bin_type=True)))
    return st.lists(part, min_size=2, max_size=3)


# --- talking to the server ------------------------------------------------------------------------------------------


class Conn:
    def __init__(self, path: str) -> None:
        self.path = path
        self.ctx = zmq.Context()
        self.sock = self._connect()

    def _connect(self) -> zmq.Socket:
        s = self.ctx.socket(zmq.DEALER)
        s.setsockopt(zmq.LINGER, 0)
        s.setsockopt(zmq.RCVTIMEO, REPLY_TIMEOUT_MS)
        s.setsockopt(zmq.SNDTIMEO, 10_000)
        s.connect("ipc://" + self.path)
        return s

    def reconnect(self) -> None:
        self.sock.close(0)
        self.sock = self._connect()

    def exchange(self, frames: list[bytes]) -> tuple[list[bytes], float]:
        """Send one message; return every reply that came (the first within REPLY_TIMEOUT_MS, then strays)."""
        t0 = time.monotonic()
        self.sock.send_multipart(frames)
        replies = []
        if self.sock.poll(REPLY_TIMEOUT_MS, zmq.POLLIN):
            replies.append(self.sock.recv())
            while self.sock.poll(STRAY_MS, zmq.POLLIN):
                replies.append(self.sock.recv())
        return replies, time.monotonic() - t0

    def call(self, method: str, params: dict) -> dict:
        replies, _ = self.exchange([msgpack.packb({"id": 424242, "method": method, "params": params})])
        assert len(replies) == 1, f"{method}: {len(replies)} replies"
        msg = msgpack.unpackb(replies[0], raw=False)
        assert msg["id"] == 424242 and "result" in msg, msg
        return msg["result"]

    def close(self) -> None:
        self.sock.close(0)
        self.ctx.term()


def _brief(v: object) -> object:
    """v with long strings shortened, for reports."""
    if isinstance(v, (str, bytes)) and len(v) > 80:
        return f"<{type(v).__name__} of {len(v)}: {v[:20]!r}...>"
    if isinstance(v, list):
        return [_brief(x) for x in v]
    if isinstance(v, dict):
        return {_brief(k): _brief(x) for k, x in v.items()}
    return v


def _short(frames: list[bytes]) -> str:
    out = []
    for f in frames:
        try:
            r = repr(_brief(msgpack.unpackb(f, raw=False, strict_map_key=True)))
            out.append(f"msgpack {r[:400]}{'...' if len(r) > 400 else ''} [{len(f)} bytes]")
        except Exception:
            out.append(f"bytes {f[:80]!r}{'...' if len(f) > 80 else ''} [{len(f)} bytes]")
    return " + ".join(out)


def _expected(frame: bytes) -> tuple[object, str | None]:
    """(the id the server can read back, the method when the frame is a well-formed request)."""
    try:
        msg = msgpack.unpackb(frame, raw=False, strict_map_key=True)
    except Exception:
        return None, None
    if not isinstance(msg, dict):
        return None, None
    method, params = msg.get("method"), msg.get("params", {})
    ok = isinstance(method, str) and isinstance(params, dict)
    return msg.get("id"), method if ok else None


def check_reply(frames: list[bytes], replies: list[bytes], elapsed: float, known: set[str]) -> str | None:
    """None when the exchange is right, else what is wrong with it."""
    if not replies:
        return f"no reply within {REPLY_TIMEOUT_MS / 1000:g}s"
    if len(replies) > 1:
        return f"{len(replies)} replies to one message: {[r[:200] for r in replies]}"
    raw = replies[0]
    if len(raw) > MAX_MESSAGE:
        return f"reply of {len(raw)} bytes exceeds MAX_MESSAGE ({MAX_MESSAGE}) (a client with ZMQ_MAXMSGSIZE " \
               f"drops the connection)"
    try:
        msg = msgpack.unpackb(raw, raw=False)
    except Exception as e:
        return f"undecodable reply {raw[:200]!r}: {e}"
    if not isinstance(msg, dict) or ("error" in msg) == ("result" in msg):
        return f"malformed reply {repr(msg)[:300]}"
    if len(frames) == 1:
        rid, method = _expected(frames[0])
    else:
        rid, method = None, None
    got = msg.get("id")
    # an int id (what clients send) comes back as it was; any other may be echoed or refused (null)
    same = msgpack.packb(got, use_bin_type=True) == msgpack.packb(rid, use_bin_type=True)
    if not same and (got is not None or (isinstance(rid, int) and not isinstance(rid, bool))):
        return f"reply id {repr(_brief(got))[:100]} is not the request's id {repr(_brief(rid))[:100]}"
    if "result" in msg:
        if method not in known:
            return f"a result for a message that is not a request of a known method: {repr(msg)[:300]}"
        return None
    err = msg["error"]
    if not isinstance(err, dict) or not isinstance(err.get("message"), str):
        return f"malformed error {repr(err)[:300]}"
    if len(frames) > 1 and err.get("code") != "invalid_argument":
        return f"multipart message answered {err.get('code')}: {err.get('message', '')[:300]}"
    if err.get("code") not in ALLOWED:
        return f"error code {err.get('code')!r} ({elapsed:.1f}s): {err.get('message', '')[:400]}"
    return None


def seeds(t: Target) -> list[list[bytes]]:
    """Explicit examples hypothesis runs first (inputs that broke the servers before; they must stay fixed)."""
    pk = lambda v: msgpack.packb(v, use_bin_type=True)  # noqa: E731
    out = [
        [pk({"id": 1, "method": "kill", "params": {"id": t.real_id, "signal": "²"}})],  # isdigit() but not int()
        [_frame_of_size({"id": 2, "method": "", "params": {}}, (None,), MAX_MESSAGE, "str")],  # echoed method
    ]
    if t.name == "manager":  # forwarded to the shim, whose not_found reply once echoed the 8 MiB exec id
        out.append([_frame_of_size({"id": 3, "method": "wait", "params": {"id": t.real_id, "timeout": SHORT_POLL,
                                                                           "exec_id": ""}},
                                   ("params", "exec_id"), MAX_MESSAGE, "str")])
    return out


def fuzz(t: Target, findings: list[tuple[str, str]], health) -> int:  # type: ignore[no-untyped-def]
    """Run the hypothesis examples against t; append (problem, input) to findings; return the example count.

    After a bad reply, health() says whether the server still works (None) or what broke; it may repair it (the
    manager is restarted, which reconnects it to the shims) so the examples can go on."""
    conn = Conn(t.path)
    known = set(t.methods)
    count = 0
    broken = False

    def one(frames: list[bytes]) -> None:
        nonlocal count, broken
        if broken:
            return
        count += 1
        replies, elapsed = conn.exchange(frames)
        problem = check_reply(frames, replies, elapsed, known)
        if problem is None:
            return
        findings.append((problem, _short(frames)))
        if not replies:
            conn.reconnect()  # a late reply must not be taken for the next example's
        damage, repaired = health()
        if damage:
            findings.append((f"and then: {damage}", _short(frames)))
            conn.reconnect()
            broken = not repaired

    strategy = st.one_of(single_frames(t).map(lambda f: [f]), multipart_frames(t))
    example = given(strategy)(one)
    for seed in seeds(t):
        example = hypothesis.example(seed)(example)
    try:
        FUZZ(example)()
        # nothing arrives after the last exchange
        assert broken or not conn.sock.poll(200, zmq.POLLIN), "a stray reply after the last example"
    finally:
        conn.close()
    return count


def report(t: Target, findings: list[tuple[str, str]], log: str) -> str:
    seen: dict[str, tuple[str, str]] = {}  # kind of problem -> (problem, shortest input)
    for problem, inp in findings:
        key = re.sub(r"\d+", "N", problem)[:100]
        if key not in seen or len(inp) < len(seen[key][1]):
            seen[key] = (problem, inp)
    lines = [f"{len(findings)} bad replies from the {t.name} ({len(seen)} distinct):"]
    lines += [f"  - {p[:600]}\n      input: {i}" for p, i in seen.values()]
    tbs = [m.start() for m in re.finditer("Traceback", log)]
    if tbs:
        lines.append(f"  {len(tbs)} tracebacks in the logs; the first:\n{log[tbs[0]:tbs[0] + 3000]}")
    return "\n".join(lines)


def _run_container(env) -> tuple[str, dict]:
    id = env.name("fz")
    env.ok("run", "-d", "--name", id, "busybox", "sleep", "100000")
    return id, env.inspect(id)


def _manager_reaches(env, id: str) -> str | None:
    """None when the manager serves and gets answers from the container's shim (a wait goes to the shim)."""
    c = Client(env.sock, timeout=20)
    try:
        res = c.call("wait", {"id": id, "timeout": 0})
        info = c.call("inspect", {"id": id})
    except ShimdError as e:
        return f"{type(e).__name__}: {e}"
    finally:
        c.close()
    if res.get("exited") or info.get("status") != "running":  # type: ignore[union-attr]
        return f"wait: {res}, inspect status: {info.get('status')}"  # type: ignore[union-attr]
    return None


def _shim_answers(env, id: str, within: float = 3.0) -> bool:
    """Does the shim answer a request that needs one of its timers (a short wait) in time?"""
    c = Conn(os.path.join(env.state, "shims", id, "shim.sock"))
    try:
        c.sock.send(msgpack.packb({"id": 1, "method": "wait", "params": {"timeout": 0.1}}))
        return bool(c.sock.poll(int(within * 1000), zmq.POLLIN))
    finally:
        c.close()


def _shim_log(env, id: str) -> str:
    path = os.path.join(env.state, "shims", id, "shim.log")
    return open(path, errors="replace").read() if os.path.exists(path) else ""


# --- the tests ------------------------------------------------------------------------------------------------------


@pytest.mark.timeout(300)
def test_fuzz_manager_socket(env):
    id, before = _run_container(env)
    # pull and push with a random reference would reach for a registry off this machine (docker.io): never
    t = Target("manager", env.sock, id, sorted(manager_methods() & set(MANAGER_SCHEMA) - {"pull", "push"}))
    findings: list[tuple[str, str]] = []

    def health() -> tuple[str | None, bool]:
        problem = _manager_reaches(env, id)
        if problem is None:
            return None, True
        # repair: a new manager reconnects to the shim (live-restore), so the examples can go on and teardown works
        env.kill_manager(signal.SIGTERM)
        env.start_manager()
        return f"the manager no longer reaches the container ({problem}); restarted the manager", True

    t0 = time.monotonic()
    try:
        n = fuzz(t, findings, health)
    finally:
        if health()[0]:  # never leave a manager that cannot remove the container to the teardown
            findings.append(("the manager could not reach the container at the end", ""))
    print(f"\nmanager fuzz: {n} examples in {time.monotonic() - t0:.1f}s, {len(findings)} bad replies")

    # still serving, nothing made or broken
    env.ok("ps")
    after = env.inspect(id)
    assert (after["status"], after["pid"], after["shim_pid"]) == ("running", before["pid"], before["shim_pid"])
    assert env.ok("ps", "-a", "-q").out.split() == [id]
    assert env.container_ids_on_disk() == [id]
    assert not findings, report(t, findings, env.manager_log() + _shim_log(env, id))


@pytest.mark.timeout(300)
def test_fuzz_shim_socket(env):
    id, before = _run_container(env)
    sock = os.path.join(env.state, "shims", id, "shim.sock")
    t = Target("shim", sock, id, sorted(shim_methods() & set(SHIM_SCHEMA)))
    findings: list[tuple[str, str]] = []

    def health() -> tuple[str | None, bool]:
        c = Conn(sock)
        try:
            replies, _ = c.exchange([msgpack.packb({"id": 1, "method": "state", "params": {}})])
        finally:
            c.close()
        state = msgpack.unpackb(replies[0], raw=False).get("result") if replies else None
        if state and state.get("status") == "running" and state.get("pid") == before["pid"]:
            return None, True
        return f"the shim no longer serves the container (state: {state})", False

    t0 = time.monotonic()
    n = fuzz(t, findings, health)
    print(f"\nshim fuzz: {n} examples in {time.monotonic() - t0:.1f}s, {len(findings)} bad replies")

    conn = Conn(sock)
    try:
        state = conn.call("state", {})
    finally:
        conn.close()
    assert (state["id"], state["status"], state["pid"]) == (id, "running", before["pid"])
    after = env.inspect(id)
    assert (after["status"], after["pid"], after["shim_pid"]) == ("running", before["pid"], before["shim_pid"])
    assert after["execs"] == []
    assert not findings, report(t, findings, _shim_log(env, id))


@pytest.mark.timeout(120)
@pytest.mark.parametrize("target", ["manager", "shim"])
def test_oversized_frame_drops_only_that_connection(env, target):
    id, before = _run_container(env)
    path = env.sock if target == "manager" else os.path.join(env.state, "shims", id, "shim.sock")
    ping = msgpack.packb({"id": 1, "method": "ping", "params": {}})

    big = Conn(path)
    other = Conn(path)  # a connection that was open all along is not affected
    try:
        assert other.call("ping", {})
        frame = _frame_of_size({"id": 2, "method": "ping", "params": {"pad": ""}}, ("params", "pad"),
                               9 * 1024 * 1024, "str")
        assert len(frame) > MAX_MESSAGE
        big.sock.send(frame)
        assert not big.sock.poll(1000, zmq.POLLIN), "the server answered a frame over ZMQ_MAXMSGSIZE"

        fresh = Conn(path)
        try:
            replies, _ = fresh.exchange([ping])
            assert len(replies) == 1 and msgpack.unpackb(replies[0])["id"] == 1, replies
            assert "result" in msgpack.unpackb(replies[0])
        finally:
            fresh.close()
        assert other.call("ping", {})
        # a frame exactly at the limit is still taken
        at_limit = _frame_of_size({"id": 3, "method": "ping", "params": {"pad": ""}}, ("params", "pad"),
                                  MAX_MESSAGE, "str")
        replies, _ = other.exchange([at_limit])
        assert len(replies) == 1 and "result" in msgpack.unpackb(replies[0], raw=False), replies
    finally:
        big.close()
        other.close()

    env.ok("ps")
    after = env.inspect(id)
    assert (after["status"], after["pid"], after["shim_pid"]) == ("running", before["pid"], before["shim_pid"])


@pytest.mark.timeout(120)
@pytest.mark.parametrize("target", ["manager", "shim"])
def test_a_nan_timeout_does_not_hold_up_other_clients(env, target):
    """A long poll whose timeout is NaN must be refused (or answered at once) and must not disturb anyone else.

    Found by the fuzzing, when Params.float still took NaN and `min(max(t, 0.0), 60.0)` kept it: asyncio then
    scheduled a timer at loop.time() + NaN. NaN compares false with everything, which breaks the ordering of the
    event loop's timer heap: a timer that lands below it waits until the timers above it are due. Other clients'
    0.3 s waits were answered only when unrelated 3 s long polls ended (and a NaN wait whenever its turn came).
    Params.float now refuses non-finite numbers; this test is what keeps it so."""
    id, _ = _run_container(env)
    path = env.sock if target == "manager" else os.path.join(env.state, "shims", id, "shim.sock")
    a, b = Conn(path), Conn(path)
    try:
        sent: dict[int, float] = {}
        timeouts = [t for i in range(6) for t in (3.0 + 0.01 * i, math.nan)]  # long polls and NaNs interleaved
        for n, timeout in enumerate(timeouts):
            sent[100 + n] = time.monotonic()
            a.sock.send(msgpack.packb({"id": 100 + n, "method": "wait", "params": {"id": id, "timeout": timeout}}))
        a.sock.send(msgpack.packb({"id": 1, "method": "ping", "params": {}}))
        a_replies: dict[int, tuple[float, dict]] = {}

        def take_a(until: int) -> None:
            while until not in a_replies:
                assert a.sock.poll(15_000, zmq.POLLIN), f"no reply to request {until} within 15 s"
                msg = msgpack.unpackb(a.sock.recv(), raw=False)
                a_replies[msg["id"]] = (time.monotonic(), msg)

        take_a(1)  # handlers start in arrival order: once ping is answered, every wait has set its timer

        t0 = time.monotonic()
        for k in range(8):
            b.sock.send(msgpack.packb({"id": k, "method": "wait", "params": {"id": id, "timeout": 0.3}}))
        others = []
        for _ in range(8):
            assert b.sock.poll(15_000, zmq.POLLIN), "another client's 0.3 s wait got no answer within 15s"
            msg = msgpack.unpackb(b.sock.recv(), raw=False)
            assert msg.get("result") == {"exited": False}, msg
            others.append(round(time.monotonic() - t0, 2))

        deadline = time.monotonic() + 15  # let every long poll end, so the server is left as it was found
        while set(sent) - set(a_replies) and a.sock.poll(max(0, int((deadline - time.monotonic()) * 1000))):
            msg = msgpack.unpackb(a.sock.recv(), raw=False)
            a_replies[msg["id"]] = (time.monotonic(), msg)
        missing = [(rid, timeouts[rid - 100]) for rid in sorted(set(sent) - set(a_replies))]
        nan_took = {rid: round(a_replies[rid][0] - sent[rid], 2) for rid in sent
                    if math.isnan(timeouts[rid - 100]) and rid in a_replies}
        print(f"\n{target}: other clients' 0.3 s waits answered after {others}s; NaN waits after {nan_took}s; "
              f"not answered within 15 s: {missing}")
        assert max(others) < 2.0, f"other clients' 0.3 s waits took {others}s: held up by NaN timers"
        assert not missing, f"long polls (id, timeout) {missing} got no answer within 15 s: the timers are wedged"
        assert max(nan_took.values(), default=0) < 2.0, f"NaN-timeout waits were answered after {nan_took}s"
        for rid in nan_took:
            reply = a_replies[rid][1]
            assert "result" in reply or reply["error"]["code"] == "invalid_argument", reply
    finally:
        a.close()
        b.close()
        _recover_from_nan(env, id)


def _recover_from_nan(env, id: str) -> None:
    """Should NaN timers get through again, they leave a server's timer heap broken for good (its timers, exit
    handling included, wait behind the NaN ones). So the teardown is left something that can remove the container
    either way: a fresh manager, and no shim rather than a wedged one (the manager then cleans up after it as after
    any dead shim)."""
    if not _shim_answers(env, id):
        pid = int(open(os.path.join(env.state, "shims", id, "shim.pid")).read())
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE, 10,
                 "the wedged shim to die")
    env.kill_manager(signal.SIGTERM)
    env.start_manager()


# --- the schemas are the handlers' ----------------------------------------------------------------------------------

PROBE_DIR = os.path.join(REPO, "tests", "params_probe")


def schema_names(schema: dict) -> set[str]:
    """The parameter names a method's schema gives, a map's own as "map.name"."""
    out = set()
    for key, kind in schema.items():
        out.add(key)
        if isinstance(kind, dict):
            out |= {f"{key}.{name}" for name in schema_names(kind)}
    return out


def probed_reads(path: str) -> dict[tuple[str, str], set[str]]:
    """(server, method) -> the names its handler read, from tests/params_probe's file."""
    out: dict[tuple[str, str], set[str]] = {}
    with open(path) as f:
        for line in f:
            server, label, name = line.rstrip("\n").split("\t")
            method, _, inner = label.partition(": ")
            out.setdefault((server, method), set()).add(f"{inner}.{name}" if inner else name)
    return out


def schema_drift(server: str, schemas: dict, methods: set[str], reads: dict[tuple[str, str], set[str]]) -> list[str]:
    """Where a server's schemas and its handlers disagree: methods, and the names each method's handler read."""
    problems = []
    if set(schemas) != methods:
        problems.append(f"{server}: schemas for {sorted(set(schemas) - methods)} that the handlers do not "
                        f"register; handlers {sorted(methods - set(schemas))} without a schema")
    for method in sorted(methods & set(schemas)):
        named, read = schema_names(schemas[method]), reads.get((server, method), set())
        if named != read:
            problems.append(f"{server} {method}: schema names {sorted(named - read)} the handler never reads; "
                            f"handler reads {sorted(read - named)} the schema lacks")
    return problems


def _call_each(call, calls: list[tuple[str, dict]]) -> None:
    for method, params in calls:
        try:
            call(method, params)
        except ShimdError:
            pass  # refused after reading: the reads are what is measured here


@pytest.mark.timeout(120)
def test_the_fuzz_schemas_are_exactly_what_the_handlers_read(bare_env):
    """The methods the schemas cover are the ones the handler tables register, and each schema names exactly the
    parameters its real handler reads: every method of both servers is called, in running processes, with the
    params it needs to get past its first check, while tests/params_probe records each name a handler looks up
    (found or absent: a handler that looks for a name knows it)."""
    env = bare_env
    probe = os.path.join(env.base, "params-read.tsv")
    env.start_manager(env={"PYTHONPATH": os.pathsep.join([PROBE_DIR, REPO]), "SHIMD_PARAMS_PROBE": probe})
    a, b, c = env.name("a"), env.name("b"), env.name("c")
    for id in (a, b):
        env.ok("run", "-d", "--name", id, "busybox", "sleep", "100000")
    client = Client(env.sock, timeout=30)
    try:
        _call_each(client.call, [
            ("ping", {}), ("version", {}), ("info", {}), ("list", {}), ("inspect", {"id": a}),
            ("create", {"spec": {"args": ["sleep", "100000"], "image": "busybox", "id": c}}), ("start", {"id": c}),
            ("exec", {"id": a, "args": ["true"], "exec_id": "probe"}),
            ("wait", {"id": a, "exec_id": "probe", "timeout": 5}),
            ("logs", {"id": a, "exec_id": "probe", "timeout": 0}),
            ("events", {"id": a, "timeout": 0}), ("kill", {"id": a, "signal": "CONT"}), ("pause", {"id": a}),
            ("unpause", {"id": a}), ("stats", {"id": a}), ("top", {"id": a}), ("reopen_log", {"id": a}),
            ("update", {"id": a, "pids_limit": 1000}), ("write_stdin", {"id": a, "data": b""}),
            ("close_stdin", {"id": a}), ("resize", {"id": a, "rows": 24, "cols": 80}),
            ("delete", {"id": a, "exec_id": "probe"}), ("restart", {"id": c, "timeout": 0}),
            ("stop", {"id": c, "timeout": 0}), ("delete", {"id": c, "force": True}),
            ("pull", {"ref": "127.0.0.1:1/none:1", "tls_verify": False, "authfile": "", "platform": ""}),
            ("push", {"ref": "none", "dest": "", "tls_verify": True, "authfile": ""}), ("images", {}),
            ("image_inspect", {"ref": "none"}), ("image_remove", {"ref": "none", "force": False}),
            ("image_prune", {"all": False}), ("image_tag", {"source": "none", "target": "x"}),
            ("image_import", {"path": "/nonexistent", "tag": "", "platform": "", "ref": ""}),
            ("image_save", {"ref": "none", "path": "/nonexistent/x", "format": "docker"}),
            ("export", {"id": a}), ("export_read", {"stream": "none", "wait": 0}), ("transfers", {"ref": ""}),
            ("commit", {"id": a, "ref": "", "comment": "", "author": "", "pause": True}),
            *[(f"{kind}_{verb}", params) for kind in ("network", "volume") for verb, params in (
                ("create", {"name": "probe", **({"subnet": ""} if kind == "network" else {})}), ("list", {}),
                ("inspect", {"name": "probe"}), ("remove", {"name": "probe"}))],
        ])
    finally:
        client.close()
    conn = Conn(os.path.join(env.state, "shims", b, "shim.sock"))  # straight to a shim: methods the manager
    try:                                                             # never calls, and names it never sends
        _call_each(lambda method, params: conn.exchange([msgpack.packb({"id": 1, "method": method,
                                                                         "params": params})]),
                   [(m, {"timeout": 0} if m in LONG_POLLS else {"signal": "CONT"} if m == "kill" else {})
                    for m in ["ping", "state", "pids", "stats", "events", "logs", "wait", "reopen_log", "write_stdin",
                              "close_stdin", "resize", "update", "pause", "resume", "exec", "kill", "start",
                              "create", "restart", "delete", "shutdown", "hosts"]])
    finally:
        conn.close()

    reads = probed_reads(probe)
    problems = (schema_drift("manager", MANAGER_SCHEMA, manager_methods(), reads)
                + schema_drift("shimd", SHIM_SCHEMA, shim_methods(), reads))
    assert not problems, "\n".join(problems)


def test_schema_drift_names_each_kind_of_difference():
    schema = {"a": {"x": "int", "m": {"y": "str"}}, "b": {}, "gone": {}}
    reads = {("s", "a"): {"x", "m", "m.y"}, ("s", "b"): set(), ("s", "new"): set()}
    assert schema_drift("s", schema, {"a", "b", "gone"}, reads) == []
    reads[("s", "a")] = {"x", "m", "m.z", "w"}
    assert schema_drift("s", schema, {"a", "b", "new"}, reads) == [
        "s: schemas for ['gone'] that the handlers do not register; handlers ['new'] without a schema",
        "s a: schema names ['m.y'] the handler never reads; handler reads ['m.z', 'w'] the schema lacks",
    ]
