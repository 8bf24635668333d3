"""The CRI front: a process of its own that serves the CRI v1 gRPC API (RuntimeService and ImageService on one
unix socket) and the streaming server behind Exec, Attach and PortForward, and turns every call into calls of the
manager's API.

Why a process apart from the manager: kubelet's calls must survive the manager's death. The front holds no state
of its own (every pod and container is an ordinary shimd container whose CRI metadata rides in its labels), so it
is never out of date; a manager call under way when the manager dies is sent again, with the same request key, to
the next manager (shimproto.client). The manager starts a front at its start when none runs (manager/crifront.py);
the front keeps running across manager restarts, one per state dir (a lock in <state>), and stops when the
manager stops gracefully (SIGTERM)."""

from __future__ import annotations

import argparse
import fcntl
import logging
import os
import signal
import sys
import threading
from concurrent import futures

import grpc

from .calls import Manager
from .config import CriConfig

log = logging.getLogger("shimd.cri")

WORKERS = 32  # concurrent CRI calls; each holds a thread (and its own manager connection) while it runs
LOCK_NAME, PID_NAME = "cri.lock", "cri.pid"


def claim(state: str) -> int | None:
    """The front's lock in state (held until exit), or None when another front holds it."""
    fd = os.open(os.path.join(state, LOCK_NAME), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def write_pid(state: str) -> None:
    """<state>/cri.pid, once the socket serves (so a pid there means calls are answered)."""
    tmp = os.path.join(state, PID_NAME + ".tmp")
    with open(tmp, "w") as f:
        f.write(f"{os.getpid()}\n")
    os.replace(tmp, os.path.join(state, PID_NAME))


def build(cfg: CriConfig, state: str, manager: Manager) -> tuple[grpc.Server, object]:
    from .image_service import ImageService
    from .pb import api_pb2_grpc
    from .runtime_service import RuntimeService
    from .streambackend import StreamBackend
    from .streaming import StreamingServer

    streaming = StreamingServer(cfg.stream_address, 0, StreamBackend(manager)).start()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="cri"),
                         options=[("grpc.max_receive_message_length", 16 << 20),
                                  ("grpc.max_send_message_length", 16 << 20)])
    api_pb2_grpc.add_RuntimeServiceServicer_to_server(RuntimeService(cfg, state, manager, streaming), server)
    api_pb2_grpc.add_ImageServiceServicer_to_server(ImageService(cfg, state, manager), server)
    path = cfg.socket_path(state)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    try:
        os.unlink(path)  # a socket file left by a front that died; the lock says none serves it now
    except FileNotFoundError:
        pass
    old = os.umask(0o177)
    try:
        if not server.add_insecure_port("unix:" + path):
            raise OSError(f"cannot listen on {path}")
    finally:
        os.umask(old)
    return server, streaming


def serve(cfg: CriConfig, state: str, manager_socket: str) -> int:
    lock = claim(state)
    if lock is None:
        log.info("another CRI front serves %s", state)
        return 0
    server, streaming = build(cfg, state, Manager(manager_socket))
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    server.start()
    write_pid(state)
    log.info("CRI on unix://%s, streaming on %s", cfg.socket_path(state), streaming.base_url)  # type: ignore
    done.wait()
    log.info("stopping")
    server.stop(grace=2).wait(5)
    streaming.stop()  # type: ignore[attr-defined]
    for name in (cfg.socket_path(state), os.path.join(state, PID_NAME)):
        try:
            os.unlink(name)
        except FileNotFoundError:
            pass
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m manager.cri", description="shimd's CRI front (started by the "
                                 "manager)")
    ap.add_argument("--state", required=True)
    ap.add_argument("--manager-socket", required=True)
    ap.add_argument("--config-json", default="{}")
    ap.add_argument("--debug", action="store_true")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if a.debug else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s cri[%(process)d] %(levelname)s %(message)s")
    return serve(CriConfig.from_json(a.config_json), a.state, a.manager_socket)
