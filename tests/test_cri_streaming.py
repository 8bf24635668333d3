"""The CRI streaming server driven by the real Go clients (client-go's remotecommand and portforward, as crictl
v1.26.1 uses them), with a backend that runs real processes and a real TCP echo server."""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import time

import pytest

from manager.cri.streaming import AttachRequest, ExecRequest, PortForwardRequest, StreamingServer
from tests.cri_streamkit import EchoServer, FakeBackend, streamclient
from tests.harness import wait_for


@pytest.fixture(scope="module")
def client() -> str:
    return streamclient()


@pytest.fixture
def backend():
    b = FakeBackend()
    yield b
    b.cleanup()


@pytest.fixture
def server(backend: FakeBackend):
    with StreamingServer("127.0.0.1", 0, backend) as s:
        yield s


def run(client: str, url: str, *flags: str, stdin: bytes = b"", timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run([client, "stream", *flags, url], input=stdin, capture_output=True, timeout=timeout)


def test_exec_without_tty_keeps_stdout_and_stderr_apart_and_reports_exit_zero(client, server):
    url = server.exec_url(ExecRequest("c1", ["sh", "-c", "echo to-out; echo to-err >&2"]))
    r = run(client, url)
    assert r.returncode == 0, r.stderr
    assert r.stdout == b"to-out\n"
    assert r.stderr == b"to-err\nexit code 0\n"


def test_exec_reports_a_non_zero_exit_code_and_carries_stdin(client, server):
    url = server.exec_url(ExecRequest("c1", ["sh", "-c", "cat; exit 7"], stdin=True))
    r = run(client, url, "-stdin", stdin=b"line one\nline two\n")
    assert r.returncode == 7, r.stderr
    assert r.stdout == b"line one\nline two\n"
    assert r.stderr == b"exit code 7\n"


def test_exec_of_a_killed_process_reports_128_plus_the_signal(client, server):
    r = run(client, server.exec_url(ExecRequest("c1", ["sh", "-c", "kill -TERM $$"])))
    assert r.returncode == 128 + signal.SIGTERM, r.stderr


def test_exec_output_larger_than_the_spdy_window_arrives_whole(client, server):
    # spdystream never sends WINDOW_UPDATE: a server that honoured its 64 KiB window would stall here.
    r = run(client, server.exec_url(ExecRequest("c1", ["sh", "-c", "head -c 3000000 /dev/zero"])))
    assert r.returncode == 0, r.stderr
    assert r.stdout == b"\0" * 3_000_000


def test_a_stream_the_request_did_not_ask_for_is_refused_and_the_client_still_finishes(client, server):
    # crictl's client opens stderr whenever there is no tty, whatever the CRI request said.
    started = time.monotonic()
    r = run(client, server.exec_url(ExecRequest("c1", ["sh", "-c", "echo out; echo err >&2"], stderr=False)))
    assert r.returncode == 0, r.stderr
    assert r.stdout == b"out\n" and r.stderr == b"exit code 0\n"
    assert time.monotonic() - started < 5


def test_exec_with_tty_echoes_stdin_and_resizes_reach_the_backend(client, server, backend):
    cmd = ["sh", "-c", "read line; echo \"got:$line\"; stty size"]
    url = server.exec_url(ExecRequest("c1", cmd, tty=True, stdin=True, stderr=False))
    p = subprocess.Popen([client, "stream", "-stdin", "-tty", "-sizes", "80x24,100x30", url],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    wait_for(lambda: len(backend.sizes) == 2, what="both terminal sizes at the backend")
    out, err = p.communicate(b"hello\n", timeout=30)
    assert p.returncode == 0, err
    assert [(s.width, s.height) for s in backend.sizes] == [(80, 24), (100, 30)]
    lines = out.replace(b"\r\n", b"\n").split(b"\n")
    assert b"hello" in lines  # the terminal's echo
    assert b"got:hello" in lines
    assert b"30 100" in lines  # stty size: rows columns, as the last resize set them


def test_attach_carries_stdin_and_stdout_until_the_container_exits(client, server, backend):
    backend.start_container("c2", 'echo ready; while read l; do echo "attached:$l"; done; echo bye')
    url = server.attach_url(AttachRequest("c2", stdin=True))
    r = run(client, url, "-stdin", stdin=b"a\nb\n")
    assert r.returncode == 0, r.stderr
    assert r.stdout == b"ready\nattached:a\nattached:b\nbye\n"


def test_port_forward_copies_bytes_both_ways_on_two_connections(client, server, backend):
    echo = EchoServer()
    url = server.portforward_url(PortForwardRequest("pod-1"))
    p = subprocess.Popen([client, "portforward", url, f"0:{echo.port}"], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        local = _local_port(p, echo.port)
        a = socket.create_connection(("127.0.0.1", local), timeout=10)
        b = socket.create_connection(("127.0.0.1", local), timeout=10)
        big = os.urandom(300_000)
        a.sendall(b"first")
        b.sendall(big)
        assert _recv_exactly(a, 10) == b"echo:first"
        assert _recv_exactly(b, 5 + len(big)) == b"echo:" + big
        a.close()
        b.shutdown(socket.SHUT_WR)  # the end of our bytes reaches the echo server, which then hangs up
        assert b.recv(10) == b""
        b.close()
        assert echo.connections == 2 and backend.forwarded == [echo.port, echo.port]
    finally:
        p.stdin.close()  # the client stops forwarding
        p.wait(10)
        echo.close()
    assert p.returncode == 0, p.stderr.read()


def test_port_forward_to_a_closed_port_sends_the_error_to_the_client(client, server):
    closed = socket.create_server(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    url = server.portforward_url(PortForwardRequest("pod-1"))
    p = subprocess.Popen([client, "portforward", url, f"0:{port}"], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        local = _local_port(p, port)
        c = socket.create_connection(("127.0.0.1", local), timeout=10)
        assert c.recv(10) == b""  # the client hangs up the local connection
        c.close()
    finally:
        p.stdin.close()
        p.wait(10)
    err = p.stderr.read().decode()
    assert f"error forwarding port {port} to pod pod-1" in err and "refused" in err


def test_unknown_reused_and_expired_tokens_get_404(client, backend):
    with StreamingServer("127.0.0.1", 0, backend, token_ttl=0.5) as s:
        url = s.exec_url(ExecRequest("c1", ["true"]))
        assert run(client, url).returncode == 0
        reused = run(client, url)
        assert reused.returncode != 0 and b"token unknown or already used" in reused.stderr
        unknown = run(client, s.base_url + "/exec/not-a-token")
        assert b"token unknown or already used" in unknown.stderr
        late = s.exec_url(ExecRequest("c1", ["true"]))
        time.sleep(0.6)
        expired = run(client, late)
        assert expired.returncode != 0 and b"token expired" in expired.stderr
        for path in ("/exec/not-a-token", "/nowhere", "/portforward/" + late.rsplit("/", 1)[1]):
            assert _post(s, path) == 404
        wrong_kind = s.attach_url(AttachRequest("c1"))
        assert _post(s, "/exec/" + wrong_kind.rsplit("/", 1)[1]) == 404


def test_a_request_that_is_not_an_upgrade_or_speaks_no_common_protocol_is_refused(server):
    tok = lambda: server.exec_url(ExecRequest("c1", ["true"])).rsplit("/", 1)[1]  # noqa: E731
    assert _post(server, "/exec/" + tok(), {}) == 400
    assert _post(server, "/exec/" + tok(), {**UPGRADE, "X-Stream-Protocol-Version": "v9.channel.k8s.io"}) == 403
    assert _post(server, "/exec/" + tok(), {"Connection": "Upgrade", "Upgrade": "SPDY/3.1"}) == 400


def test_a_client_that_disconnects_mid_stream_leaves_the_server_serving(client, server, backend):
    url = server.exec_url(ExecRequest("c1", ["sh", "-c", "echo started; exec sleep 60"], stdin=True))
    p = subprocess.Popen([client, "stream", "-stdin", url], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert p.stdout.readline() == b"started\n"
    p.kill()
    p.wait()
    wait_for(backend.ended.is_set, what="the exec to end once its client is gone")
    assert backend.execs[0].returncode == -signal.SIGKILL
    r = run(client, server.exec_url(ExecRequest("c1", ["echo", "still serving"])))
    assert r.returncode == 0 and r.stdout == b"still serving\n"


def test_a_client_that_sends_garbage_after_the_upgrade_is_dropped_and_the_server_goes_on(client, server):
    tok = server.exec_url(ExecRequest("c1", ["true"])).rsplit("/", 1)[1]
    raw = socket.create_connection(server.address, timeout=10)
    head = "".join(f"{k}: {v}\r\n" for k, v in UPGRADE.items())
    raw.sendall(f"POST /exec/{tok} HTTP/1.1\r\nHost: x\r\n{head}\r\n".encode())
    reply = raw.recv(4096)
    assert reply.startswith(b"HTTP/1.1 101") and b"X-Stream-Protocol-Version: v4.channel.k8s.io" in reply
    raw.sendall(b"\x80\x02\x00\x01" + b"\xff" * 64)  # a SPDY/2 frame: not ours
    assert raw.recv(4096)[:4] == b"\x80\x03\x00\x07"  # GOAWAY
    raw.close()
    r = run(client, server.exec_url(ExecRequest("c1", ["echo", "fine"])))
    assert r.returncode == 0 and r.stdout == b"fine\n"


def _local_port(p: subprocess.Popen, remote: int) -> int:
    line = p.stdout.readline().decode().split()
    assert line[:1] == ["port"] and int(line[2]) == remote, line
    assert p.stdout.readline() == b"ready\n"
    return int(line[1])


def _recv_exactly(s: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        assert chunk, f"connection closed after {len(buf)} of {n} bytes"
        buf += chunk
    return buf


UPGRADE = {"Connection": "Upgrade", "Upgrade": "SPDY/3.1", "X-Stream-Protocol-Version": "v4.channel.k8s.io"}


def _post(s: StreamingServer, path: str, headers: dict = UPGRADE) -> int:
    c = http.client.HTTPConnection(*s.address, timeout=10)
    c.request("POST", path, headers=headers)
    status = c.getresponse().status
    c.close()
    return status
