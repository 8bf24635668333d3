"""Fixtures: every test gets its own manager with its own --root/--state, and must leave nothing behind.

The per-test teardown removes the test's containers and fails the test if any process, mount, runtime state or
cgroup of it survives. The session check at the end fails the run if anything of any test is still around:
shims, managers, container processes (runc init included), zombies of ours, or mounts.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import psutil
import pytest

from tests.harness import BASE_PREFIX, Env, new_env, our_processes, remove_base, zombies_of

_bases: list[str] = []


def pytest_configure(config: pytest.Config) -> None:
    if os.geteuid() != 0:
        raise pytest.UsageError("shimd's tests run as root (real runc, namespaces, mounts)")
    if not shutil.which("runc"):
        raise pytest.UsageError("runc is not installed (scripts/setup installs it)")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    outcome = yield
    rep = outcome.get_result()
    if rep.when == "call":
        item.failed_call = rep.failed  # type: ignore[attr-defined]


def _dump_logs(request: pytest.FixtureRequest, e: Env) -> None:
    """When a test failed, print the tail of every manager and shim log of it (shown with the failure)."""
    if not getattr(request.node, "failed_call", False):
        return
    shims = os.path.join(e.state, "shims")
    paths = list(e.log_files) + ([os.path.join(shims, d, "shim.log") for d in sorted(os.listdir(shims))]
                                 if os.path.isdir(shims) else [])
    for path in paths:
        try:
            with open(path, errors="replace") as f:
                lines = f.readlines()[-60:]
        except OSError:
            continue
        print(f"----- {path} (last {len(lines)} lines)\n" + "".join(lines))


def _managed_env(request: pytest.FixtureRequest, start: bool):
    e = new_env()
    _bases.append(e.base)
    if start:
        e.start_manager()
    yield e
    _dump_logs(request, e)
    problems = e.cleanup()
    if problems:
        pytest.fail("test left things behind:\n  " + "\n  ".join(problems), pytrace=False)
    remove_base(e.base)


@pytest.fixture
def env(request: pytest.FixtureRequest) -> Env:
    """A fresh manager in its own temp --root/--state."""
    yield from _managed_env(request, start=True)


@pytest.fixture
def bare_env(request: pytest.FixtureRequest) -> Env:
    """Like env, but the test starts the manager itself."""
    yield from _managed_env(request, start=False)


@pytest.fixture
def shared_root():
    """Mark / shared, as systemd does at boot, for the length of the test (restarts under `unshare --propagation
    slave` then mean what they do under MountFlags=slave); / is private again afterwards."""
    subprocess.run(["mount", "--make-rshared", "/"], check=True)
    try:
        yield
    finally:
        subprocess.run(["mount", "--make-rprivate", "/"], check=True)


def session_leftovers() -> list[str]:
    """Everything of ours still alive or mounted: processes of any test base dir, any `runc init`, zombies of
    this process tree, and mounts under a test base dir."""
    procs: dict[int, str] = {}
    for base in _bases:
        for p in our_processes(base):
            try:
                procs[p.pid] = " ".join(p.cmdline())
            except psutil.Error:
                pass
    for p in psutil.process_iter(["pid", "cmdline"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if "runc init" in cmd or ("shimd" in cmd and BASE_PREFIX in cmd):
            procs[p.pid] = cmd
    problems = [f"process {pid}: {cmd}" for pid, cmd in sorted(procs.items())]
    ours = {os.getpid()} | {p.pid for p in psutil.Process().children(recursive=True)}
    problems += zombies_of(ours)
    with open("/proc/self/mountinfo") as f:
        for line in f:
            mp = line.split()[4]
            if mp.startswith(BASE_PREFIX):
                problems.append(f"mount {mp}")
    return problems


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    problems = session_leftovers()
    if problems:
        tr = session.config.pluginmanager.get_plugin("terminalreporter")
        msg = "LEAK CHECK FAILED: left behind after the test session:\n  " + "\n  ".join(sorted(set(problems)))
        if tr:
            tr.write_line(msg, red=True)
        else:
            print(msg)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
