"""The CRI front as a process (manager/crifront.py, manager/cri/front.py): what makes CRI outlive the manager.

With host-network pods and the built-in busybox, so nothing here needs a registry or a network: crictl (built by
scripts/test from cri-tools v1.26.1) drives the front; critest itself runs in tests/test_critest.py."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time

import pytest

from tests.harness import Env, wait_for

CRICTL = "/usr/local/bin/crictl"
pytestmark = [pytest.mark.timeout(180),
              pytest.mark.skipif(not os.access(CRICTL, os.X_OK), reason="crictl is built by scripts/test")]


def crictl(env: Env, *args: str, timeout: float = 60, check: bool = True) -> subprocess.CompletedProcess:
    ep = "unix://" + os.path.join(env.state, "cri.sock")
    p = subprocess.run([CRICTL, "--runtime-endpoint", ep, "--image-endpoint", ep, "--timeout", "60s", *args],
                       capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    if check:
        assert p.returncode == 0, f"crictl {' '.join(args)}: {p.stderr}\n{env.manager_log()[-2000:]}"
    return p


def front_pid(env: Env) -> int:
    try:
        pid = int(open(os.path.join(env.state, "cri.pid")).read())
        os.kill(pid, 0)
        return pid
    except (OSError, ValueError):
        return 0


@pytest.fixture
def cri(bare_env: Env, tmp_path):
    bare_env.manager_env["SHIMD_CRI"] = "1"
    bare_env.start_manager()
    wait_for(lambda: crictl(bare_env, "version", check=False).returncode == 0, 30, "the CRI front to serve")
    pod = tmp_path / "pod.json"
    pod.write_text(json.dumps({"metadata": {"name": "web", "namespace": "shop", "uid": "u-1", "attempt": 0},
                               "log_directory": str(tmp_path / "logs" / "shop_web"),  # made by create
                               "linux": {"security_context": {"namespace_options": {"network": 2}}}}))
    ctr = tmp_path / "ctr.json"
    ctr.write_text(json.dumps({"metadata": {"name": "app"}, "image": {"image": "busybox"},
                               "command": ["sh", "-c", "echo started; exec sleep 1000"], "log_path": "app.log",
                               "linux": {}}))
    yield bare_env, str(pod), str(ctr)
    if bare_env.manager_pid():
        crictl(bare_env, "rmp", "-a", "-f", check=False)


def run_pod(env: Env, pod: str, ctr: str) -> tuple[str, str]:
    sid = crictl(env, "runp", pod).stdout.strip()
    cid = crictl(env, "create", sid, ctr, pod).stdout.strip()
    crictl(env, "start", cid)
    return sid, cid


def test_pod_containers_are_shimd_containers_with_their_pod(cri):
    env, pod, ctr = cri
    sid, cid = run_pod(env, pod, ctr)
    ps = env.ok("ps").out
    assert sid in ps and cid in ps, ps
    assert "shop/web" in ps, f"`shimctl ps` shows no pod column:\n{ps}"
    assert crictl(env, "exec", cid, "echo", "hi").stdout == "hi\n"
    wait_for(lambda: "started" in crictl(env, "logs", cid).stdout, 10, "the container's first line in its log")
    log = json.loads(crictl(env, "inspect", cid).stdout)["status"]["logPath"]
    assert log.endswith("/logs/shop_web/app.log") and open(log).read().endswith(" stdout F started\n")
    crictl(env, "stopp", sid)
    assert json.loads(crictl(env, "inspect", cid).stdout)["status"]["state"] == "CONTAINER_EXITED"
    crictl(env, "rmp", sid)
    assert sid not in env.ok("ps", "-a").out


def test_the_front_outlives_a_manager_sigkill_and_calls_wait_for_the_next_manager(cri):
    env, pod, ctr = cri
    sid, cid = run_pod(env, pod, ctr)
    front = front_pid(env)
    assert front
    env.kill_manager(signal.SIGKILL)
    out: dict = {}
    call = threading.Thread(target=lambda: out.setdefault("p", crictl(env, "exec", cid, "echo", "during",
                                                                      check=False)))
    call.start()  # the front takes it while no manager runs ...
    time.sleep(1.5)
    assert front_pid(env) == front, "the front died with the manager"
    env.start_manager()  # ... and the next manager answers it
    call.join(60)
    assert out["p"].returncode == 0 and out["p"].stdout == "during\n", out["p"].stderr
    assert front_pid(env) == front, "the new manager started a second front"
    assert json.loads(crictl(env, "inspect", cid).stdout)["status"]["state"] == "CONTAINER_RUNNING"
    assert sid in crictl(env, "pods", "-q").stdout


def test_an_attach_opened_while_no_manager_runs_gets_what_the_container_answers_to_its_stdin(cri, tmp_path):
    env, pod, _ = cri
    ctr = tmp_path / "reader.json"
    ctr.write_text(json.dumps({"metadata": {"name": "reader"}, "image": {"image": "busybox"},
                               "command": ["sh", "-c", 'while read l; do echo "got:$l"; done; echo bye'],
                               "stdin": True, "stdin_once": True, "log_path": "reader.log", "linux": {}}))
    _, cid = run_pod(env, pod, str(ctr))
    env.kill_manager(signal.SIGKILL)
    ep = "unix://" + os.path.join(env.state, "cri.sock")
    p = subprocess.Popen([CRICTL, "--runtime-endpoint", ep, "--timeout", "60s", "attach", "-i", cid],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert p.stdin is not None
    p.stdin.write(b"hello\n")
    p.stdin.close()  # the front holds the line while no manager runs ...
    time.sleep(1.5)
    env.start_manager()  # ... and the next manager delivers it
    p.wait(60)  # its output is a few bytes: the pipes hold it
    out, err = p.stdout.read(), p.stderr.read()  # type: ignore[union-attr]
    assert p.returncode == 0 and out == b"got:hello\nbye\n", (out, err, env.manager_log()[-2000:])


def test_a_dead_front_is_started_again_and_the_manager_stops_it_on_its_way_out(cri):
    env, pod, ctr = cri
    first = front_pid(env)
    os.kill(first, signal.SIGKILL)
    wait_for(lambda: front_pid(env) not in (0, first), 20, "the manager to start another front")
    assert crictl(env, "version").returncode == 0
    second = front_pid(env)
    env.kill_manager(signal.SIGTERM)
    wait_for(lambda: not os.path.exists(f"/proc/{second}"), 10, "the front to stop with the manager")
    assert not os.path.exists(os.path.join(env.state, "cri.sock"))
    env.start_manager()  # the fixture's teardown needs one


def test_a_manager_stopped_at_once_stops_a_front_that_is_still_starting(bare_env: Env):
    """systemctl start then stop: the front has no pid file yet (it writes one once it serves), and must go too."""
    env = bare_env
    env.manager_env["SHIMD_CRI"] = "1"
    env.start_manager()
    env.kill_manager(signal.SIGTERM)
    pattern = f"-m\0manager.cri\0--state\0{env.state}\0".encode()

    def fronts() -> list[str]:
        out = []
        for name in filter(str.isdigit, os.listdir("/proc")):
            try:
                with open(f"/proc/{name}/cmdline", "rb") as f:
                    if pattern in f.read():
                        out.append(name)
            except OSError:
                pass
        return out

    wait_for(lambda: not fronts(), 10, "every CRI front of this state dir to stop with the manager")
    assert not os.path.exists(os.path.join(env.state, "cri.sock"))
