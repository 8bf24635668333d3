"""For the CRI streaming tests: a backend that runs real processes, a TCP echo server, and the real Go client.

The Go client (tests/go/streamclient/main.go) is built offline against cri-tools v1.26.1's vendored modules
(client-go's remotecommand and portforward, moby/spdystream), exactly the code crictl runs, and cached under
/var/cache/shimd-tests/ by a hash of its source.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import pty
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import termios
import threading

import pytest

from manager.cri.streaming import AttachRequest, ClientGone, ExecRequest, StreamIO, TerminalSize
from tests.harness import REPO, shared_tools

CACHE = "/var/cache/shimd-tests"
CRI_TOOLS_TREE = "/tmp/crit"
CRI_TOOLS_TARBALL = os.path.join(shared_tools(), "cri-tools-v1.26.1.tar.xz")
GO = "/usr/bin/go"
GO_CACHE = "/var/cache/cri-tools-go"  # build-cri-tools.sh's default GOCACHE


def streamclient() -> str:
    """The path of the built client; builds it (offline, GOFLAGS=-mod=vendor GOPROXY=off) when its source changed."""
    src = os.path.join(REPO, "tests", "go", "streamclient", "main.go")
    with open(src, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()[:16]
    out = os.path.join(CACHE, f"streamclient-{digest}")
    if os.access(out, os.X_OK):
        return out
    if not os.access(GO, os.X_OK):
        pytest.skip(f"{GO} is not installed: cannot build the Go streaming client")
    os.makedirs(CACHE, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="streamclient-") as tmp:
        tree = os.path.join(tmp, "cri-tools")
        os.makedirs(os.path.join(tree, "cmd", "streamclient"))
        if os.path.exists(os.path.join(CRI_TOOLS_TREE, "vendor", "modules.txt")):
            for name in ("go.mod", "go.sum"):
                shutil.copy(os.path.join(CRI_TOOLS_TREE, name), tree)
            os.symlink(os.path.join(CRI_TOOLS_TREE, "vendor"), os.path.join(tree, "vendor"))
        else:
            subprocess.run(["tar", "-xJf", CRI_TOOLS_TARBALL, "-C", tree, "go.mod", "go.sum", "vendor"], check=True)
        shutil.copy(src, os.path.join(tree, "cmd", "streamclient", "main.go"))
        # the build cache and flags of ../shared/tools/build-cri-tools.sh, which scripts/test runs first: crictl
        # compiled the same vendored packages, so only our main.go is new (5 s here instead of 50 on a new machine)
        env = dict(os.environ, GOFLAGS="-mod=vendor", GOPROXY="off", GO111MODULE="on", CGO_ENABLED="0",
                   GOCACHE=os.environ.get("GOCACHE") or GO_CACHE, GOPATH=os.path.join(tmp, "gopath"))
        built = subprocess.run([GO, "build", "-trimpath", "-o", out + ".tmp", "./cmd/streamclient"], cwd=tree,
                               env=env, capture_output=True, text=True, timeout=600)
        assert built.returncode == 0, f"go build of the streaming client failed:\n{built.stderr}"
    os.rename(out + ".tmp", out)
    return out


def _code(rc: int) -> int:
    return 128 - rc if rc < 0 else rc


class FakeBackend:
    """Exec runs the command as a real child (on a pty when tty); attach joins a "container" the test started
    (a child with stdin/stdout pipes); port_forward connects to 127.0.0.1:port for a known pod."""

    def __init__(self) -> None:
        self.sizes: list[TerminalSize] = []
        self.pods = {"pod-1"}
        self.containers: dict[str, subprocess.Popen] = {}
        self.execs: list[subprocess.Popen] = []
        self.ended = threading.Event()  # an exec or attach returned
        self.forwarded: list[int] = []

    # -- exec ---------------------------------------------------------------------------------------------
    def exec(self, req: ExecRequest, io: StreamIO) -> int:
        return self._exec_tty(req, io) if io.tty else self._exec_pipes(req, io)

    def _exec_pipes(self, req: ExecRequest, io: StreamIO) -> int:
        pipe, null = subprocess.PIPE, subprocess.DEVNULL
        p = subprocess.Popen(req.cmd, stdin=pipe if io.stdin else null, stdout=pipe if io.stdout else null,
                             stderr=pipe if io.stderr else null)
        self.execs.append(p)
        pumps = [_thread(_copy_out, p.stdout, io.stdout), _thread(_copy_out, p.stderr, io.stderr)]
        if io.stdin:
            _thread(_copy_in, io.stdin, p.stdin)
        _thread(_kill_when_gone, io, p)
        for t in pumps:
            t.join()
        rc = _code(p.wait())
        self.ended.set()
        return rc

    def _exec_tty(self, req: ExecRequest, io: StreamIO) -> int:
        master, slave = pty.openpty()
        p = subprocess.Popen(req.cmd, stdin=slave, stdout=slave, stderr=slave, start_new_session=True,
                             preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0))
        os.close(slave)
        self.execs.append(p)
        done = threading.Event()

        def resizes() -> None:
            while not done.is_set():
                size = io.next_resize(timeout=0.1)
                if size is not None:
                    self.sizes.append(size)
                    fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", size.height, size.width, 0, 0))

        def stdin() -> None:
            for chunk in iter(lambda: io.stdin.read(), b""):
                os.write(master, chunk)

        _thread(resizes)
        if io.stdin:
            _thread(stdin)
        _thread(_kill_when_gone, io, p)
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the terminal's last holder is gone
                break
            if not chunk:
                break
            try:
                io.stdout.write(chunk)
            except ClientGone:
                pass
        rc = _code(p.wait())
        done.set()
        os.close(master)
        self.ended.set()
        return rc

    # -- attach -------------------------------------------------------------------------------------------
    def start_container(self, cid: str, script: str) -> subprocess.Popen:
        p = subprocess.Popen(["sh", "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self.containers[cid] = p
        return p

    def attach(self, req: AttachRequest, io: StreamIO) -> None:
        p = self.containers[req.container_id]
        if io.stdin:
            _thread(_copy_in, io.stdin, p.stdin)
        out = _thread(_copy_out, p.stdout, io.stdout)
        while out.is_alive() and not io.gone.is_set():
            out.join(0.1)
        self.ended.set()

    # -- port-forward ---------------------------------------------------------------------------------------
    def port_forward(self, pod_sandbox_id: str, port: int) -> socket.socket:
        if pod_sandbox_id not in self.pods:
            raise LookupError(f"no pod {pod_sandbox_id}")
        self.forwarded.append(port)
        return socket.create_connection(("127.0.0.1", port), timeout=5)

    def cleanup(self) -> None:
        for p in self.execs + list(self.containers.values()):
            if p.poll() is None:
                p.kill()
            p.wait()


def _thread(target, *args) -> threading.Thread:  # type: ignore[no-untyped-def]
    t = threading.Thread(target=target, args=args, daemon=True)
    t.start()
    return t


def _copy_out(src, dst) -> None:  # type: ignore[no-untyped-def]
    if src is None:
        return
    for chunk in iter(lambda: src.read1(65536), b""):
        if dst is not None:
            try:
                dst.write(chunk)
            except ClientGone:
                dst = None  # keep draining so the process never blocks on a full pipe
    src.close()


def _copy_in(src, dst) -> None:  # type: ignore[no-untyped-def]
    try:
        for chunk in iter(lambda: src.read(), b""):
            dst.write(chunk)
            dst.flush()
        dst.close()
    except (BrokenPipeError, ValueError):
        pass


def _kill_when_gone(io: StreamIO, p: subprocess.Popen) -> None:
    while p.poll() is None:
        if io.gone.wait(0.1):
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL) if io.tty else p.kill()
            return


class EchoServer:
    """A TCP server on 127.0.0.1 that sends back what it reads, prefixed once per connection with "echo:"."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        _thread(self._serve)

    def _serve(self) -> None:
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            _thread(self._echo, c)

    @staticmethod
    def _echo(c: socket.socket) -> None:
        with c:
            c.sendall(b"echo:")
            for chunk in iter(lambda: c.recv(65536), b""):
                c.sendall(chunk)

    def close(self) -> None:
        self.sock.close()
