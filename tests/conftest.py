"""Fixtures: every test gets its own manager with its own --root/--state, and must leave nothing behind.

The per-test teardown first records what the test left behind (tests/leaks.py: processes, zombies, mounts in
every namespace, cgroups in every hierarchy, runtime state, beyond what the manager lists), then removes the
test's containers, stops the manager and checks that nothing survived; either finding fails the test. The session
check at the end fails the run if anything of any test of this session is still around: processes naming one of
its base dirs or in the cgroup of one of its containers, zombies under them or under pytest and its subreaper,
mounts under its base dirs in any namespace, cgroups of its containers. Only this session's base dirs and
container ids are looked at: other sessions on the same machine are not ours to judge.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from tests import leaks
from tests.harness import Env, new_env, remove_base, tag_of

pytest_plugins = ["tests.netns"]  # the network namespace fixtures of the networking tests

# Containers of the suite get runc's own empty network namespace (loopback up) unless a test asks for a network:
# the networking tests (tests/test_network*.py) run their managers inside network namespaces they made, so no
# bridge, address or NAT rule is ever made in the host's.
os.environ.setdefault("SHIMD_DEFAULT_NETWORK", "none")
# The CRI front (a process per manager, manager/crifront.py) runs only where a test asks for it (SHIMD_CRI=1 in
# Env.manager_env): the CRI tests.
os.environ.setdefault("SHIMD_CRI", "0")

_bases: list[str] = []
_ids: dict[str, set[str]] = {}  # base -> its container ids, kept after the base dir is removed
_managers: dict[str, set[int]] = {}  # base -> the pids of its managers (their shim templates are its own)
_session_start = leaks.boot_ticks()
KSM_RUN = "/sys/kernel/mm/ksm/run"  # managers start ksmd (memory_merge): the session puts the host's setting back


def _ksm_run() -> str | None:
    try:
        with open(KSM_RUN) as f:
            return f.read().strip()
    except OSError:
        return None


_ksm_at_start = _ksm_run()


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
    _ids[e.base] = e.ids
    _managers[e.base] = e.managers
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
    """Everything of this session's tests still alive, mounted or in a cgroup: leaks.left_behind of every base
    dir of the session with nothing listed (the ids of removed base dirs remembered from their teardown), and
    zombies of pytest's tree and its subreaper since the session began. Files inside a base dir are left out: a
    failed test's base dir is kept for its logs, and its test has failed already."""
    problems: list[str] = []
    for base in _bases:
        listing = leaks.Listing(managers=_managers.get(base, set()))
        found = leaks.left_behind(base, listing, _session_start, tag_of(base), frozenset(_ids.get(base, ())),
                                  files=False)
        problems += [p if p.startswith("zombie") else f"{base}: {p}" for p in found]
    problems += [z for _, z in leaks.tree_zombies(leaks.proc_table(), _session_start)]
    return sorted(set(problems))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _ksm_at_start is not None and _ksm_run() != _ksm_at_start:
        with open(KSM_RUN, "w") as f:
            f.write(_ksm_at_start)
    problems = session_leftovers()
    if problems:
        tr = session.config.pluginmanager.get_plugin("terminalreporter")
        msg = "LEAK CHECK FAILED: left behind after the test session:\n  " + "\n  ".join(sorted(set(problems)))
        if tr:
            tr.write_line(msg, red=True)
        else:
            print(msg)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
