"""shimd: argv -> config -> run, and the offline `delete` cleanup for a shim that is gone.

    shimd start --id ID --state DIR [--runtime runc] [--runtime-root DIR] [--ready-fd N]
    shimd delete --id ID --state DIR [--runtime runc] [--runtime-root DIR] [--files DIR]
    shimd template --control-fd N --parent PID [--memory-merge]   the warm fork server (shimd/template.py)

`start` detaches (double fork, new session) and reports "ok <pid>" or "error <text>" on the ready fd once its API
socket is bound. The daemon half is `serve()`, which a pre-imported parent may also call right after a fork.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import shutil
import signal
import socket
import sys
from dataclasses import dataclass

from shimproto.model import check_id

SPARE_ENV = "SHIMD_SPARE"  # "0" in the manager's environment: the template makes no spare shims


@dataclass
class ShimConfig:
    id: str
    state_dir: str
    runtime: str = "runc"
    runtime_root: str | None = None
    ready_fd: int | None = None
    debug: bool = False
    shared: tuple[str, ...] = ()  # rshared volumes' sources (shimd.sys.private_mount_namespace)

    @property
    def socket(self) -> str:
        return os.path.join(self.state_dir, "shim.sock")


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="shimd", description="per-container shim of shimd")
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("start", "delete"):
        p = sub.add_parser(name)
        p.add_argument("--id", required=True)
        p.add_argument("--state", required=True, help="the shim's state directory")
        p.add_argument("--runtime", default="runc")
        p.add_argument("--runtime-root", default=None)
        if name == "delete":
            p.add_argument("--files", default="", help="the container's files dir (its network record)")
        if name == "start":
            p.add_argument("--ready-fd", type=int, default=None)
            p.add_argument("--debug", action="store_true")
            p.add_argument("--shared", action="append", default=[], help="an rshared volume's source")
    t = sub.add_parser("template")
    t.add_argument("--control-fd", type=int, required=True)
    t.add_argument("--parent", type=int, required=True)
    t.add_argument("--memory-merge", action="store_true", help="offer its pages and its shims' to ksmd")
    return ap


def _report(fd: int | None, line: str) -> None:
    if fd is None:
        return
    try:
        os.write(fd, (line + "\n").encode())
        os.close(fd)
    except OSError:
        pass


def _logger(cfg: ShimConfig) -> logging.LoggerAdapter:
    path = os.path.join(cfg.state_dir, "shim.log")
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600))  # owner-only before logging opens it
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(cid)s] %(message)s"))
    root = logging.getLogger("shimd")
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if cfg.debug else logging.INFO)
    return logging.LoggerAdapter(root, {"cid": cfg.id})


async def _serve(cfg: ShimConfig, log: logging.LoggerAdapter) -> None:
    import zmq.asyncio

    from runtime.runc import Runc
    from shimproto.rpc import Server

    from .container import Container
    from .reaper import Reaper
    from .service import ShimService, translate

    loop = asyncio.get_running_loop()
    reaper = Reaper()
    reaper.install(loop)
    env = {k: v for k, v in os.environ.items() if k != "NOTIFY_SOCKET"}
    runc = Runc(reaper, binary=cfg.runtime, root=cfg.runtime_root, log_dir=cfg.state_dir, env=env)
    container = Container(cfg.id, cfg.state_dir, runc, reaper, log)
    service = ShimService(container)
    ctx = zmq.asyncio.Context()
    server = Server(ctx, cfg.socket, service.handlers(), log, translate=translate)
    for sig in (signal.SIGTERM, signal.SIGINT):
        # TERM takes the same path as the shutdown call without force: a shim that still owns a container
        # stays (killing the shim must never silently kill the container).
        loop.add_signal_handler(sig, lambda: None if not container.gone else service.stop.set())
    serving = asyncio.create_task(server.serve())
    _report(cfg.ready_fd, f"ok {os.getpid()}")
    log.info("serving on %s", cfg.socket)
    await service.stop.wait()
    await server.drain(1.0)  # the reply that asked us to stop goes out (close's linger delivers it)
    serving.cancel()
    server.close(linger_ms=1000)
    ctx.term()
    log.info("shim exiting")


def serve(cfg: ShimConfig, prepared: bool = False) -> int:
    """The daemon half: we are already detached. Become subreaper, take a private mount namespace (a spare did
    both before its request: prepared), serve."""
    from . import sys as _sys

    log = _logger(cfg)
    try:
        if not prepared:
            _sys.set_child_subreaper()
            _sys.private_mount_namespace(cfg.shared)
        with open(os.path.join(cfg.state_dir, "shim.pid"), "w") as f:
            f.write(f"{os.getpid()}\n")
        asyncio.run(_serve(cfg, log))
    except BaseException as e:
        log.exception("shim failed")
        _report(cfg.ready_fd, f"error {type(e).__name__}: {e}")
        return 1
    return 0


def start(cfg: ShimConfig) -> int:
    import daemon

    os.makedirs(cfg.state_dir, mode=0o700, exist_ok=True)
    ctx = daemon.DaemonContext(
        detach_process=True, working_directory="/", umask=0o022, signal_map={},
        files_preserve=[cfg.ready_fd] if cfg.ready_fd is not None else [],
    )
    with ctx:
        return serve(cfg)


def _forked_config(req: dict, ready_fd: int) -> ShimConfig:
    return ShimConfig(id=req["id"], state_dir=os.path.abspath(req["state"]), runtime=req["runtime"],
                      runtime_root=req.get("runtime_root") or None, ready_fd=ready_fd, debug=bool(req.get("debug")),
                      shared=tuple(req.get("shared") or ()))


def _start_forked(req: dict, ready_fd: int) -> int:
    """`start` for a child of the template (shimd/template.py), from its request: the same config, the same path."""
    return start(_forked_config(req, ready_fd))


def spare(link: socket.socket) -> int:
    """A spare shim (shimd/template.py's Spare): `start`'s detaching and `serve`'s subreaper done ahead, then, once
    the template hands it a request, its mount namespace and the rest of `serve` as any shim. The namespace is
    copied only then: one copied ahead would miss every host mount made since under a private mount (a volume's
    source mounted after the spare was made, which a host whose / is not shared never propagates)."""
    import daemon

    from . import sys as _sys
    from .template import receive, take_cold_line

    with daemon.DaemonContext(detach_process=True, working_directory="/", umask=0o022, signal_map={},
                              files_preserve=[link.fileno()]):
        _sys.set_child_subreaper()
        got = receive(link)
        if got is None:  # the template closed our link: no request will come
            return 0
        req, ready_fd = got
        try:
            take_cold_line(req, ready_fd)  # checks the id first
            cfg = _forked_config(req, ready_fd)
            _sys.private_mount_namespace(cfg.shared)
            os.makedirs(cfg.state_dir, mode=0o700, exist_ok=True)
        except Exception as e:
            _report(ready_fd, f"error spare shim: {type(e).__name__}: {e}")
            return 1
        return serve(cfg, prepared=True)


def delete(cfg: ShimConfig, files_dir: str = "") -> int:
    """Clean up after a shim that is gone: release the container's network (CNI DEL from the record in files_dir,
    naming the namespace of the container's init while it still runs), force-delete the runtime's container,
    unmount, remove the state.

    Prints the recorded exit status as JSON (null when the shim recorded none)."""
    from runtime.cni import Cni
    from runtime.opts import DeleteOpts
    from runtime.runc import Runc
    from shimproto.model import CREATED, PAUSED, RUNNING

    from . import sys as _sys
    from .container import recorded_exit
    from .net import RECORD, release_recorded
    from .reaper import Reaper

    async def run() -> None:
        reaper = Reaper()
        reaper.install(asyncio.get_running_loop())
        runc = Runc(reaper, binary=cfg.runtime, root=cfg.runtime_root)
        if files_dir and os.path.exists(os.path.join(files_dir, RECORD)):
            try:  # only a live init's pid: a stopped one's may name another process by now
                st = await runc.state(cfg.id)
                pid = int(st.get("pid") or 0) if st.get("status") in (CREATED, RUNNING, PAUSED) else 0
            except Exception:  # no such container in the runtime: its namespace went with it
                pid = 0
            netns = f"/proc/{pid}/ns/net" if pid else ""
            await release_recorded(os.path.join(files_dir, RECORD), Cni(reaper), logging.getLogger("shimd"), netns)
        try:
            await runc.delete(cfg.id, DeleteOpts(force=True))
        except Exception as e:  # runtime NotFound is the usual case: nothing to delete
            print(f"shimd delete: runtime: {e}", file=sys.stderr)

    # a shim still serving this dir (it never reported ready, or ignored a shutdown) would outlive the dir with
    # nobody to find it again
    if killed := _sys.kill_shims_of(cfg.state_dir):
        print(f"shimd delete: killed {killed} shim process(es) still running on {cfg.state_dir}", file=sys.stderr)
    asyncio.run(run())
    exit = recorded_exit(cfg.state_dir)
    _sys.unmount(os.path.join(cfg.state_dir, "bundle", "rootfs"))
    shutil.rmtree(cfg.state_dir, ignore_errors=True)
    print(json.dumps(exit.to_wire() if exit else None))
    return 0


def main(argv: list[str] | None = None) -> int:
    a = _parser().parse_args(argv)
    if a.cmd == "template":
        from .template import serve as template

        return template(a.control_fd, a.parent, _start_forked, memory_merge=a.memory_merge,
                        spare=None if os.environ.get(SPARE_ENV) == "0" else spare)
    try:
        check_id(a.id)
    except Exception as e:
        print(f"shimd: {e}", file=sys.stderr)
        return 2
    cfg = ShimConfig(id=a.id, state_dir=os.path.abspath(a.state), runtime=a.runtime,
                     runtime_root=a.runtime_root, ready_fd=getattr(a, "ready_fd", None),
                     debug=getattr(a, "debug", False), shared=tuple(getattr(a, "shared", ())))
    return start(cfg) if a.cmd == "start" else delete(cfg, a.files)


if __name__ == "__main__":
    sys.exit(main())
