"""A shim that dies in the middle of a create fails that create at once (the manager watches the creating shim's
pidfd), with one line naming what happened and everything rolled back: no container listed, nothing on disk, no
process, mount, cgroup or runtime state left (the teardown's leak check)."""

from __future__ import annotations

import os
import time

import pytest

pytestmark = pytest.mark.timeout(120)

# runc, except that `runc create` SIGKILLs the shim that ran it: before anything is made, or once runc has made the
# container (its init waiting to be started, its cgroup and runtime state there) and before the shim reads its pid
KILLING_RUNTIME = """#!/bin/sh
for a in "$@"; do
  case "$a" in
    create)
      if [ "$SHIMD_TEST_KILL" = before ]; then kill -KILL $PPID; exit 1; fi
      runc "$@"; rc=$?; kill -KILL $PPID; exit $rc ;;
    start|exec|delete|kill|state) break ;;
  esac
done
exec runc "$@"
"""


@pytest.mark.parametrize("when", ["before", "after"])
def test_a_shim_killed_during_create_fails_it_at_once_and_leaves_nothing(bare_env, when):
    env = bare_env
    path = os.path.join(env.base, "killing-runc")
    with open(path, "w") as f:
        f.write(KILLING_RUNTIME)
    os.chmod(path, 0o755)
    env.start_manager("--runtime", path, env={"SHIMD_TEST_KILL": when})
    id = env.name("dies")
    t0 = time.monotonic()
    r = env.ctl("run", "-d", "--name", id, "busybox", "sleep", "600")
    took = time.monotonic() - t0
    assert r.rc == 125 and r.err.count("\n") == 1 and f"the shim of {id}" in r.err and "died during create" in r.err
    assert took < 5, f"the create took {took:.1f}s to fail"
    assert env.ok("ps", "-a", "-q").out == "" and env.container_ids_on_disk() == []
    assert not os.path.exists(os.path.join(env.state, "shims", id))
    # the name is free again, and a create on real runc works
    env.kill_manager()
    env.start_manager()
    env.ok("run", "-d", "--name", id, "busybox", "sleep", "600")
    env.ok("rm", "-f", id)
