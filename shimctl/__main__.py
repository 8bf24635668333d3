"""shimctl [--address PATH] COMMAND ...: docker-like verbs against a shimd manager.

Exit codes follow Docker: the container's code for `run` and `wait`'s printed value; 125 when `run` fails before
the container runs; 1 for any other failed command.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
import threading

from shimproto.errors import InvalidState, ShimdError, Unavailable
from shimproto.rpc import Client

from . import term

DEFAULT_ADDRESS = "/run/shimd/shimd.sock"
POLL = 20.0  # seconds a long-poll (wait, logs -f) may take on the manager's side
# calls that may be sent again after the manager was restarted under us (queries and cursor-based polls)
IDEMPOTENT = frozenset({"list", "inspect", "wait", "logs", "events", "stats", "top", "ping"})


class Usage(Exception):
    pass


def parse_size(text: str) -> int:
    units = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3}
    t = text.strip().lower().removesuffix("ib").removesuffix("b") if text else ""
    num, unit = (t[:-1], t[-1]) if t and t[-1] in "kmg" else (t, "")
    try:
        value = int(float(num) * units[unit])
    except (ValueError, KeyError):
        raise argparse.ArgumentTypeError(f"invalid size {text!r} (use e.g. 64m, 1g)") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"invalid size {text!r}: must be positive")
    return value


class Parser(argparse.ArgumentParser):
    """Usage errors in one line, as every other error; exit 125 for run (as docker run), else 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        print(f"{self.prog}: {message} (see '{self.prog} --help')", file=sys.stderr)
        sys.exit(125 if self.prog.endswith(" run") else 2)


def parser() -> argparse.ArgumentParser:
    ap = Parser(prog="shimctl", description="control a shimd manager")
    ap.add_argument("--address", default=os.environ.get("SHIMD_ADDRESS", DEFAULT_ADDRESS),
                    help="manager socket (env SHIMD_ADDRESS; default %(default)s)")
    sub = ap.add_subparsers(dest="cmd", required=True, metavar="COMMAND")

    p = sub.add_parser("run", help="create and start a container")
    p.add_argument("-d", "--detach", action="store_true", help="print the id and return once it runs")
    p.add_argument("--rm", action="store_true", help="remove the container when it exits")
    p.add_argument("--name", help="container id")
    p.add_argument("--rootfs", help="use this directory (read-only, under an overlay) instead of an image")
    p.add_argument("-e", "--env", action="append", default=[], help="environment variable NAME=VALUE")
    p.add_argument("-w", "--workdir", default="/", help="working directory inside the container")
    p.add_argument("--memory", type=parse_size, help="memory limit, e.g. 64m")
    p.add_argument("--pids-limit", type=int, help="maximum number of processes")
    p.add_argument("-i", "--interactive", action="store_true", help="keep stdin open and send ours to it")
    p.add_argument("-t", "--tty", action="store_true", help="give the container a terminal")
    p.add_argument("--log-opt", action="append", default=[], metavar="KEY=VALUE",
                   help="max-size=SIZE (rotate the log past it), max-file=N (files kept, current included)")
    p.add_argument("args", nargs=argparse.REMAINDER, metavar="IMAGE [CMD ...]")

    p = sub.add_parser("exec", help="run a process in a running container")
    p.add_argument("-d", "--detach", action="store_true", help="do not wait; its output is discarded")
    p.add_argument("-i", "--interactive", action="store_true", help="send our stdin to it")
    p.add_argument("-t", "--tty", action="store_true", help="give it a terminal")
    p.add_argument("-e", "--env", action="append", default=[], help="environment variable NAME=VALUE")
    p.add_argument("-w", "--workdir", default="", help="working directory inside the container")
    p.add_argument("id", metavar="ID")
    p.add_argument("args", nargs=argparse.REMAINDER, metavar="CMD ...")

    p = sub.add_parser("attach", help="stream a container's output from now on and send it our stdin")
    p.add_argument("--no-stdin", action="store_true", help="do not send our stdin")
    p.add_argument("id", metavar="ID")
    for verb, text in (("pause", "freeze every process of containers"), ("unpause", "thaw paused containers")):
        p = sub.add_parser(verb, help=text)
        p.add_argument("ids", nargs="+", metavar="ID")
    p = sub.add_parser("update", help="change resource limits of a running container")
    p.add_argument("--memory", type=parse_size, help="memory limit, e.g. 64m")
    p.add_argument("--pids-limit", type=int, help="maximum number of processes")
    p.add_argument("id", metavar="ID")
    p = sub.add_parser("stats", help="CPU, memory and pids of containers (one sample)")
    p.add_argument("--format", choices=["table", "json"], default="table")
    p.add_argument("ids", nargs="+", metavar="ID")
    p = sub.add_parser("top", help="the processes of a container")
    p.add_argument("id", metavar="ID")
    p = sub.add_parser("stop", help="SIGTERM, then SIGKILL after a grace period")
    p.add_argument("-t", "--time", type=float, default=None, help="seconds before SIGKILL (default: config, 10)")
    p.add_argument("ids", nargs="+", metavar="ID")
    p = sub.add_parser("events", help="stream container events (create, start, exit, ...)")
    p.add_argument("--since", type=int, default=None, help="replay from this global sequence number (0: all)")
    p.add_argument("--filter-id", dest="filter_id", default="", metavar="ID", help="only this container")
    p.add_argument("--no-follow", action="store_true", help="print what is recorded and return")
    p.add_argument("--format", choices=["text", "json"], default="text")

    p = sub.add_parser("start", help="start a created container")
    p.add_argument("id")
    p = sub.add_parser("ps", help="list containers")
    p.add_argument("-a", "--all", action="store_true", help="include stopped containers")
    p.add_argument("-q", "--quiet", action="store_true", help="only ids")
    p.add_argument("--format", choices=["table", "json"], default="table")
    p = sub.add_parser("inspect", help="show a container as JSON")
    p.add_argument("ids", nargs="+", metavar="ID")
    p = sub.add_parser("kill", help="send a signal to a container")
    p.add_argument("-s", "--signal", default="KILL")
    p.add_argument("ids", nargs="+", metavar="ID")
    p = sub.add_parser("wait", help="wait for a container to exit and print its exit code")
    p.add_argument("ids", nargs="+", metavar="ID")
    p = sub.add_parser("rm", help="remove containers")
    p.add_argument("-f", "--force", action="store_true", help="kill a running container first")
    p.add_argument("ids", nargs="+", metavar="ID")
    p = sub.add_parser("logs", help="print a container's output")
    p.add_argument("-f", "--follow", action="store_true")
    p.add_argument("id")
    return ap


class Cli:
    def __init__(self, address: str) -> None:
        self.address = address
        self._client: Client | None = None

    @property
    def client(self) -> Client:
        if self._client is None:
            try:
                os.stat(self.address)
                allowed = os.access(self.address, os.R_OK | os.W_OK)
            except FileNotFoundError:
                raise Unavailable(f"cannot connect to the shimd manager at {self.address}: no such socket "
                                  f"(is shimd-manager running?)") from None
            except PermissionError:
                allowed = False
            if not allowed:
                raise Unavailable(f"permission denied on the shimd manager socket {self.address}: run as root "
                                  f"or as a member of the group set as socket_group in the manager's config")
            self._client = Client(self.address)
        return self._client

    def call(self, method: str, params: dict | None = None, timeout: float | None = None) -> object:
        return self.client.call(method, params, timeout, idempotent=method in IDEMPOTENT)

    # --- commands ------------------------------------------------------------------------------------------

    def run(self, a: argparse.Namespace) -> int:
        rest = list(a.args)
        if rest and rest[0] == "--":
            rest = rest[1:]
        if a.rootfs:
            image, cmd = "", rest
        elif rest:
            image, cmd = rest[0], rest[1:]
        else:
            raise Usage("run needs an IMAGE or --rootfs DIR")
        params = {"id": a.name, "image": image, "rootfs": os.path.abspath(a.rootfs) if a.rootfs else "",
                  "args": cmd or ["sh"], "env": _env(a.env), "cwd": a.workdir, "memory_limit": a.memory,
                  "pids_limit": a.pids_limit, "tty": a.tty, "stdin": a.interactive, **_log_opts(a.log_opt)}
        if a.detach:
            info = self.call("create", {**params, "start": True, "auto_remove": a.rm}, timeout=60)
            print(info["id"])  # type: ignore[index]
            return 0
        info = self.call("create", {**params, "start": True}, timeout=60)
        id = info["id"]  # type: ignore[index]
        try:
            code = self._attach(id, "", 0, stdin=a.interactive, tty=a.tty)
        except ShimdError as e:
            raise RunError(e.message) from None
        if a.rm:
            self.call("delete", {"id": id, "force": True})
        return code

    def exec(self, a: argparse.Namespace) -> int:
        cmd = list(a.args)
        if cmd and cmd[0] == "--":
            cmd = cmd[1:]
        if not cmd:
            raise Usage("exec needs a command")
        exec_id = secrets.token_hex(6)
        self.call("exec", {"id": a.id, "exec_id": exec_id, "args": cmd, "env": _env(a.env), "cwd": a.workdir,
                           "tty": a.tty, "stdin": a.interactive, "detach": a.detach}, timeout=60)
        if a.detach:
            return 0
        try:
            return self._attach(a.id, exec_id, 0, stdin=a.interactive, tty=a.tty)
        finally:
            try:
                self.call("delete", {"id": a.id, "exec_id": exec_id})
            except ShimdError:
                pass

    def attach(self, a: argparse.Namespace) -> int:
        info = self.call("inspect", {"id": a.id})
        if info["status"] != "running":  # type: ignore[index]
            raise InvalidState(f"cannot attach to a {info['status']} container")  # type: ignore[index]
        return self._attach(a.id, "", -1, stdin=not a.no_stdin, tty=bool(info.get("terminal")))  # type: ignore

    def pause(self, a: argparse.Namespace) -> int:
        return self._each(a.ids, lambda id: self.call("pause", {"id": id}))

    def unpause(self, a: argparse.Namespace) -> int:
        return self._each(a.ids, lambda id: self.call("unpause", {"id": id}))

    def update(self, a: argparse.Namespace) -> int:
        if a.memory is None and a.pids_limit is None:
            raise Usage("update needs --memory or --pids-limit")
        self.call("update", {"id": a.id, "memory_limit": a.memory, "pids_limit": a.pids_limit})
        print(a.id)
        return 0

    def stats(self, a: argparse.Namespace) -> int:
        rows, rc = [], 0
        for id in a.ids:
            try:
                rows.append({"id": id, **self.call("stats", {"id": id})})  # type: ignore[dict-item]
            except ShimdError as e:
                print(f"shimctl: {e.message}", file=sys.stderr)
                rc = 1
        if a.format == "json":
            print(json.dumps(rows, indent=1))
            return rc
        fmt = "{:<20} {:>12} {:>12} {:>12} {:>6} {:>8}"
        print(fmt.format("CONTAINER ID", "CPU (s)", "MEM USAGE", "MEM LIMIT", "PIDS", "OOM"))
        for r in rows:
            print(fmt.format(r["id"], f"{r['cpu_ns'] / 1e9:.3f}", _human(r["memory_bytes"]),
                             _human(r["memory_limit"]), r["pids"], r["oom_kills"]))
        return rc

    def stop(self, a: argparse.Namespace) -> int:
        params = {} if a.time is None else {"timeout": a.time}
        return self._each(a.ids, lambda id: self.call("stop", {"id": id, **params}, timeout=3700))

    def events(self, a: argparse.Namespace) -> int:
        since = a.since
        if since is None:  # like docker events: from now on
            since = self.call("events", {"since": 1 << 62, "timeout": 0})["seq"]  # type: ignore[index]
        while True:
            res = self.call("events", {"since": since, "id": a.filter_id, "timeout": 0 if a.no_follow else POLL},
                            timeout=POLL + 15)
            for ev in res["events"]:  # type: ignore[index]
                print(json.dumps(ev) if a.format == "json" else _event_line(ev), flush=True)
                since = ev["gseq"]
            if a.no_follow and not res["events"]:  # type: ignore[index]
                return 0

    def top(self, a: argparse.Namespace) -> int:
        rows = self.call("top", {"id": a.id})
        fmt = "{:<8} {:<8} {}"
        print(fmt.format("PID", "PPID", "CMD"))
        for r in rows:  # type: ignore[union-attr]
            print(fmt.format(r["pid"], r["ppid"], r["cmd"]))
        return 0

    def start(self, a: argparse.Namespace) -> int:
        self.call("start", {"id": a.id}, timeout=60)
        print(a.id)
        return 0

    def ps(self, a: argparse.Namespace) -> int:
        rows = self.call("list", {"all": a.all})
        if a.format == "json":
            print(json.dumps(rows, indent=1))
        elif a.quiet:
            for r in rows:  # type: ignore[union-attr]
                print(r["id"])
        else:
            fmt = "{:<20} {:<12} {:<9} {:<8} {:<8} {:<30} {}"
            print(fmt.format("CONTAINER ID", "IMAGE", "STATUS", "PID", "EXIT", "CREATED", "COMMAND"))
            for r in rows:  # type: ignore[union-attr]
                print(fmt.format(r["id"], r["image"] or "-", r["status"], r["pid"] or "-",
                                 "-" if r["exit_code"] is None else r["exit_code"], r["created_at"],
                                 " ".join(r["args"])[:40]))
        return 0

    def inspect(self, a: argparse.Namespace) -> int:
        out, rc = [], 0
        for id in a.ids:
            try:
                out.append(self.call("inspect", {"id": id}))
            except ShimdError as e:
                print(f"shimctl: {e.message}", file=sys.stderr)
                rc = 1
        print(json.dumps(out, indent=1))
        return rc

    def kill(self, a: argparse.Namespace) -> int:
        return self._each(a.ids, lambda id: self.call("kill", {"id": id, "signal": a.signal}))

    def rm(self, a: argparse.Namespace) -> int:
        return self._each(a.ids, lambda id: self.call("delete", {"id": id, "force": a.force}, timeout=60))

    def wait(self, a: argparse.Namespace) -> int:
        rc = 0
        for id in a.ids:
            try:
                print(self._wait(id), flush=True)
            except ShimdError as e:
                print(f"shimctl: {e.message}", file=sys.stderr)
                rc = 1
        return rc

    def logs(self, a: argparse.Namespace) -> int:
        self._stream_logs(a.id, a.follow)
        return 0

    # --- helpers -------------------------------------------------------------------------------------------

    def _each(self, ids: list[str], fn) -> int:  # type: ignore[no-untyped-def]
        rc = 0
        for id in ids:
            try:
                fn(id)
                print(id)
            except ShimdError as e:
                print(f"shimctl: {e.message}", file=sys.stderr)
                rc = 1
        return rc

    def _wait(self, id: str, exec_id: str = "") -> int:
        while True:
            res = self.call("wait", {"id": id, "exec_id": exec_id, "timeout": POLL}, timeout=POLL + 15)
            if res["exited"]:  # type: ignore[index]
                return int(res["exit_code"])  # type: ignore[index]

    def _stream_logs(self, id: str, follow: bool, exec_id: str = "", cursor: int = 0) -> None:
        outs = {"stdout": sys.stdout.buffer, "stderr": sys.stderr.buffer}
        while True:
            res = self.call("logs", {"id": id, "exec_id": exec_id, "cursor": cursor, "follow": follow,
                                     "timeout": POLL}, timeout=POLL + 15)
            for stream, data in res["records"]:  # type: ignore[index]
                out = outs.get(stream, sys.stdout.buffer)
                out.write(data)
                out.flush()
            cursor = res["cursor"]  # type: ignore[index]
            if res["eof"]:  # type: ignore[index]
                return

    def _attach(self, id: str, exec_id: str, cursor: int, stdin: bool, tty: bool) -> int:
        """Stream the process's output (from cursor) until it exits, feeding it our stdin; its exit code."""
        control = Client(self.address)  # resize and stdin get their own sockets: the main one is mid-call
        if cursor < 0:  # pin "now" before our input can make the process print anything
            cursor = self.call("logs", {"id": id, "exec_id": exec_id, "cursor": -1})["cursor"]  # type: ignore
        if stdin:
            threading.Thread(target=_pump_stdin, args=(self.address, id, exec_id), daemon=True).start()
        resize = (lambda rows, cols: control.call("resize", {"id": id, "exec_id": exec_id, "rows": rows,
                                                             "cols": cols})) if tty else (lambda r, c: None)
        with term.raw(resize) if tty and stdin else _nothing():
            self._stream_logs(id, True, exec_id, cursor)
        return self._wait(id, exec_id)


def _pump_stdin(address: str, id: str, exec_id: str) -> None:
    """Copy our stdin to the process until EOF, then close its stdin. Runs in its own thread and socket."""
    c = Client(address)
    fd = sys.stdin.fileno()
    try:
        while True:
            data = os.read(fd, 65536)
            if not data:
                break
            c.call("write_stdin", {"id": id, "exec_id": exec_id, "data": data}, timeout=60)
        c.call("close_stdin", {"id": id, "exec_id": exec_id})
    except (ShimdError, OSError):
        pass  # the process is gone or never took stdin: output and exit code still arrive on the main path


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def _event_line(ev: dict) -> str:
    from shimproto.model import rfc3339

    extra = ""
    if ev["type"] == "exit":
        x = ev.get("exit") or {}
        extra = f" code={x.get('code')}" + (f" reason={x['reason']}" if x.get("reason") else "") + \
            (" oom_killed" if x.get("oom_killed") else "")
    elif ev.get("pid"):
        extra = f" pid={ev['pid']}"
    who = ev["id"] + (f" exec={ev['exec_id']}" if ev.get("exec_id") else "")
    return f"{rfc3339(ev['time'] or 0)} {ev['gseq']} {ev['type']} {who}{extra}"


def _human(n: int) -> str:
    if n >= 1 << 60:  # the kernel's "no limit"
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f}{unit}" if unit == "B" else f"{n:.1f}{unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


def _log_opts(opts: list[str]) -> dict:
    out: dict = {}
    for opt in opts:
        key, sep, value = opt.partition("=")
        if key == "max-size" and sep:
            out["log_max_size"] = parse_size(value)
        elif key == "max-file" and sep and value.isdigit() and int(value) >= 2:
            out["log_max_files"] = int(value)
        else:
            raise Usage(f"invalid --log-opt {opt!r} (max-size=SIZE, max-file=N with N >= 2)")
    return out


class RunError(ShimdError):
    """A failure after the container started: not run's own 125."""


def _env(items: list[str]) -> list[str]:
    out = []
    for item in items:
        if "=" not in item:
            value = os.environ.get(item)
            if value is None:
                continue
            item = f"{item}={value}"
        out.append(item)
    if out and not any(x.startswith("PATH=") for x in out):
        out.insert(0, "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
    return out


def main(argv: list[str] | None = None) -> int:
    a = parser().parse_args(argv)
    cli = Cli(a.address)
    try:
        return getattr(cli, a.cmd)(a)
    except Usage as e:
        print(f"shimctl: {e}", file=sys.stderr)
        return 125 if a.cmd == "run" else 2
    except RunError as e:
        print(f"shimctl: {e.message}", file=sys.stderr)
        return 1
    except ShimdError as e:
        print(f"shimctl: {e.message}", file=sys.stderr)
        return 125 if a.cmd == "run" else 1
    except argparse.ArgumentTypeError as e:
        print(f"shimctl: {e}", file=sys.stderr)
        return 125 if a.cmd == "run" else 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
