"""The leak checks themselves must be able to fail: plant a leftover and see each check report it."""

from __future__ import annotations

import os
import subprocess

from tests import conftest
from tests.conftest import session_leftovers
from tests.harness import leftovers, new_env, our_processes, remove_base, wait_for, zombies_of


def test_leak_checks_see_a_planted_process_mount_and_zombie():
    e = new_env()
    try:
        d = os.path.join(e.base, "state", "shims", "x", "bundle", "rootfs")
        os.makedirs(d)
        subprocess.run(["mount", "-t", "tmpfs", "none", d], check=True)
        planted = subprocess.Popen(["sh", "-c", "sleep 60; true", e.base], start_new_session=True)
        zombie = subprocess.Popen(["true"])
        try:
            assert any(d in p for p in leftovers(e.base))
            assert planted.pid in [p.pid for p in our_processes(e.base)]
            conftest._bases.append(e.base)
            found = session_leftovers()
            assert any(str(planted.pid) in p for p in found) and any(d in p for p in found)
            wait_for(lambda: zombies_of({os.getpid()}), 5, "the planted zombie")
        finally:
            subprocess.run(["umount", d], check=True)
            os.killpg(planted.pid, 9)
            planted.wait()
            zombie.wait()
            if e.base in conftest._bases:
                conftest._bases.remove(e.base)
        assert leftovers(e.base) == [] and our_processes(e.base) == []
    finally:
        remove_base(e.base)
