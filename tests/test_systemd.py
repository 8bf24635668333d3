"""The real unit file, systemd/shimd.service, under a real systemd (Debian 12's systemd 252) booted with
systemd-nspawn: Type=notify, KillMode=process with live-restore, MountFlags=slave, stop/start, WatchdogSec.

PID 1 of this machine is not systemd, so each session boots a minimal Debian in a container: the image is built
and cached by tests/systemd_image.py (debootstrap from the mirror of the machine's apt sources, then a venv with
the project's dependencies; the work tree itself is bind-mounted, never baked in), and booted, driven and halted
by tests/machine.py. Tests skip (with nspawn's own output) only when the container cannot boot here. Teardown
removes every container, stops the unit and halts the machine, and fails when anything of it is left running or
mounted on the host.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import sys
import tempfile
import time
import uuid

import pytest

from tests.harness import REPO, wait_for
from tests.machine import DROPIN_DIR, UNIT, BootFailed, Machine, own_cgroup_dirs
from tests.systemd_image import CACHE, NoMirror, apt_mirror, apt_sources, image_tarball, install_project, untar

pytestmark = pytest.mark.timeout(900)  # the first run builds the image (debootstrap ~50 s, more on a slow mirror)


def _say(msg: str) -> None:
    sys.stderr.write(f"\n[test_systemd] {msg}\n")


@pytest.fixture(scope="session")
def machine():
    for tool in ("systemd-nspawn", "debootstrap", "nsenter"):
        if not shutil.which(tool):
            pytest.skip(f"cannot boot systemd here: {tool} is not installed (scripts/setup installs it)")
    os.makedirs(CACHE, exist_ok=True)
    t0 = time.monotonic()
    with open(os.path.join(CACHE, ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one builder at a time
        try:
            image = image_tarball(_say)
        except NoMirror as e:
            pytest.fail(str(e), pytrace=False)
    name = f"shimd-test-{uuid.uuid4().hex[:8]}"
    root = tempfile.mkdtemp(prefix=f"{name}-", dir="/var/tmp")
    m = Machine(name, os.path.join(root, "rootfs"), os.path.join(root, "nspawn.log"), own_cgroup_dirs(name))
    try:
        os.mkdir(m.root)
        untar(image, m.root)
        install_project(m.root)
        m.timings["image"] = time.monotonic() - t0
        try:
            m.boot()
        except (BootFailed, AssertionError) as e:
            pytest.skip(f"systemd-nspawn cannot boot systemd here: {e}\nnspawn said:\n{m.log()}")
        _say(f"image ready in {m.timings['image']:.1f}s, booted in {m.timings['boot']:.2f}s "
             f"({m.sh('systemctl', '--version').out.splitlines()[0]})")
        yield m
    finally:
        problems = m.halt()
        shutil.rmtree(root, ignore_errors=True)
        if problems:
            pytest.fail("the systemd container left things behind on the host:\n  " + "\n  ".join(problems),
                        pytrace=False)


@pytest.fixture
def sd(machine):
    """The booted container, with shimd.service stopped and no container, before and after the test."""
    problems = machine.reset()
    assert not problems, problems
    yield machine
    problems = machine.reset()
    if problems:
        pytest.fail("test left things behind in the systemd container:\n  " + "\n  ".join(problems), pytrace=False)


STATUS = re.compile(r"^serving (\d+) containers \((\d+) running, \d+ with lost shims, \d+ creates rolled back, "
                    r"\d+ deletes finished\)$")


# --- the tests -------------------------------------------------------------------------------------------------

def test_the_debian_mirror_comes_only_from_the_apt_sources(tmp_path):
    one_line, deb822, other = tmp_path / "sources.list", tmp_path / "a.sources", tmp_path / "b.sources"
    one_line.write_text("# deb URI-COMMENTED bookworm main\ndeb-src URI-SRC bookworm main\n"
                        "deb [arch=amd64] URI-LIST bookworm main contrib # trailing comment\n")
    deb822.write_text("Types: deb\n# URI-IN-A-COMMENT\nURIs: URI-SECURITY\nSuites: bookworm-security\n"
                      "Components: main\n\nTypes: deb deb-src\nURIs: URI-DEB822 URI-SECOND\n"
                      "Suites: bookworm bookworm-updates\nComponents: main\n")
    other.write_text("Enabled: no\nTypes: deb\nURIs: URI-DISABLED\nSuites: bookworm\nComponents: main\n")
    assert apt_mirror([str(one_line), str(deb822)]) == "URI-LIST"
    assert apt_mirror([str(tmp_path / "missing.list"), str(other), str(deb822)]) == "URI-DEB822"
    with pytest.raises(NoMirror) as e:
        apt_mirror([str(other), str(tmp_path / "missing.list")])
    assert "\n" not in str(e.value) and "no Debian mirror for 'bookworm main'" in str(e.value)
    d = tmp_path / "sources.list.d"
    d.mkdir()
    for name in ("b.sources", "a.list", "c.list.disabled", "d.sources.save"):
        (d / name).write_text("")
    assert apt_sources(str(one_line)) == [str(one_line), str(d / "a.list"), str(d / "b.sources")]


def test_start_returns_after_ready_with_our_status_and_containers_run(sd):
    assert sd.show("Type", "NotifyAccess", "KillMode") == {"Type": "notify", "NotifyAccess": "main",
                                                           "KillMode": "process"}
    sd.start()
    # systemctl start of a Type=notify unit returns once READY=1 arrived: the STATUS line sent with it is there
    # already, and the unit went active only after the manager's own start-up time
    st = sd.show("ActiveState", "SubState", "StatusText", "MainPID", "ExecMainStartTimestampMonotonic",
                 "ActiveEnterTimestampMonotonic", "ExecMainPID")
    assert (st["ActiveState"], st["SubState"]) == ("active", "running")
    assert STATUS.match(st["StatusText"]), st["StatusText"]
    assert STATUS.match(st["StatusText"]).groups() == ("0", "0")
    startup = (int(st["ActiveEnterTimestampMonotonic"]) - int(st["ExecMainStartTimestampMonotonic"])) / 1e6
    print(f"fork to READY=1: {startup * 1000:.0f} ms")
    assert startup > 0.02, "active at once: READY=1 was not waited for"
    assert st["MainPID"] == st["ExecMainPID"]
    assert "shimd-manager --root /var/lib/shimd --state /run/shimd" in sd.cmdline(int(st["MainPID"]))
    r = sd.ctl("run", "--rm", "busybox", "echo", "hi")
    assert (r.rc, r.out, r.err) == (0, "hi\n", "")
    assert sd.ctl("ps", "-a", "-q").out == ""


def _start_with_a_sleeper(sd) -> tuple[int, int, int]:
    """Start the unit and a container "c" running sleep: (container pid, shim pid, manager pid)."""
    sd.start()
    sd.ok("run", "-d", "--name", "c", "busybox", "sleep", "100000")
    info = sd.inspect("c")
    return info["pid"], info["shim_pid"], sd.main_pid()


def test_restart_and_kill_9_keep_the_container_with_the_same_pid(sd):
    pid, shim, main1 = _start_with_a_sleeper(sd)
    assert sd.cmdline(pid) == "sleep 100000"

    sd.systemctl("restart", UNIT)
    main2 = sd.main_pid()
    assert main2 != main1 and not sd.alive(main1)
    assert STATUS.match(sd.prop("StatusText")).groups() == ("1", "1")
    info = sd.inspect("c")
    assert (info["status"], info["pid"], info["shim_pid"]) == ("running", pid, shim)

    # kill -9 the manager: Restart=always brings it back (after RestartSec=1)
    restarts = int(sd.prop("NRestarts"))
    t0 = time.monotonic()
    sd.kill("9", main2)
    wait_for(lambda: (s := sd.active())["ActiveState"] == "active" and s["SubState"] == "running"
             and s["MainPID"] not in ("0", str(main2)), 20, "Restart=always to bring the manager back")
    print(f"kill -9 to active again: {time.monotonic() - t0:.2f}s")
    assert int(sd.prop("NRestarts")) == restarts + 1
    main3 = sd.main_pid()
    assert main3 != main2 and not sd.alive(main2)
    assert sd.alive(pid) and sd.cmdline(pid) == "sleep 100000" and sd.alive(shim)
    ps = json.loads(sd.ok("ps", "--format", "json").out)
    assert [(c["id"], c["status"], c["pid"], c["shim_pid"]) for c in ps] == [("c", "running", pid, shim)]

    # the third manager controls it fully
    sd.ok("kill", "c")
    assert sd.ok("wait", "c").out.strip() == "137"
    sd.ok("rm", "c")
    assert sd.ctl("ps", "-a", "-q").out == ""
    wait_for(lambda: not sd.alive(pid) and not sd.alive(shim), 10, "the container and its shim to go")


def test_mountflags_slave_containers_of_one_start_are_removed_by_the_next(sd):
    sd.start()
    main1 = sd.main_pid()
    ns1 = sd.mnt_ns(main1)
    assert ns1 != sd.mnt_ns(1), "MountFlags=slave: the manager has a mount namespace of its own"
    root_line = next(line for line in sd.sh("cat", f"/proc/{main1}/mountinfo").out.splitlines()
                     if line.split()[4] == "/")
    assert "master:" in root_line and "shared:" not in root_line, root_line  # a slave of PID 1's /

    for id in ("a", "b"):
        sd.ok("run", "-d", "--name", id, "busybox", "sh", "-c", "echo data > /file; sleep 100000")
    wait_for(lambda: sd.ok("exec", "a", "cat", "/file").out == "data\n", 10, "a's /file")
    shim, init = sd.inspect("a")["shim_pid"], sd.inspect("a")["pid"]
    assert sd.mnt_ns(shim) not in (ns1, sd.mnt_ns(1))
    # a's writable root is mounted in its shim's namespace (and seen as "/" by the container) and nowhere else
    assert {m.split()[0] for m in sd.mounts_mentioning("/containers/a/")} == {sd.mnt_ns(shim), sd.mnt_ns(init)}

    hold = sd.hold_mnt_ns(main1)
    try:
        sd.systemctl("restart", UNIT)
        main2 = sd.main_pid()
        assert sd.mnt_ns(main2) not in (ns1, sd.mnt_ns(1)), "every start gets a new mount namespace"
    finally:
        os.close(hold)
    assert sd.ok("exec", "a", "cat", "/file").out == "data\n"
    sd.ok("stop", "-t", "0", "a")
    assert sd.inspect("a")["status"] == "stopped"
    r = sd.ctl("rm", "a")
    assert r.rc == 0, r.err
    r = sd.ctl("rm", "-f", "b")
    assert r.rc == 0, r.err
    assert "busy" not in sd.journal().lower()
    assert sd.mounts_mentioning("/var/lib/shimd/containers") == []
    assert sd.ctl("ps", "-a", "-q").out == ""


def test_stop_leaves_containers_and_shims_running_and_start_finds_them(sd):
    pid, shim, main = _start_with_a_sleeper(sd)

    sd.systemctl("stop", UNIT)
    st = sd.show("ActiveState", "Result", "MainPID")
    assert st == {"ActiveState": "inactive", "Result": "success", "MainPID": "0"}
    assert not sd.alive(main)
    assert sd.alive(pid) and sd.alive(shim) and sd.cmdline(pid) == "sleep 100000"
    assert sd.processes("shimd-manager") == [] and sd.sh("test", "-e", "/run/shimd/shimd.pid", check=False).rc

    sd.start()
    assert STATUS.match(sd.prop("StatusText")).groups() == ("1", "1")
    ps = json.loads(sd.ok("ps", "--format", "json").out)
    assert [(c["id"], c["status"], c["pid"], c["shim_pid"]) for c in ps] == [("c", "running", pid, shim)]
    sd.ok("rm", "-f", "c")
    wait_for(lambda: not sd.alive(pid) and not sd.alive(shim), 10, "the container and its shim to go")


def _unit_setting(key: str) -> str:
    """The value of key= in the work tree's systemd/shimd.service (the file the machine installs)."""
    with open(os.path.join(REPO, "systemd", UNIT)) as f:
        (value,) = [line.split("=", 1)[1].strip() for line in f if line.startswith(f"{key}=")]
    return value


def test_the_unit_file_verifies_without_a_word(sd):
    # inside the machine, where the unit's ExecStart exists (on the host systemd-analyze stops at the missing path)
    r = sd.sh("systemd-analyze", "verify", f"/etc/systemd/system/{UNIT}", check=False)
    assert (r.rc, r.out + r.err) == (0, "")


def test_the_units_watchdog_is_armed_and_the_manager_outlives_its_interval(sd):
    interval = _unit_setting("WatchdogSec")
    assert interval.endswith("s") and interval[:-1].isdigit(), interval
    seconds = int(interval[:-1])
    sd.start()
    assert sd.prop("WatchdogUSec") == interval
    main = sd.main_pid()
    assert f"WATCHDOG_USEC={seconds * 10**6}" in sd.sh("cat", f"/proc/{main}/environ").out.split("\0")

    # the manager pings at half the interval: past a whole interval it is the same process, never restarted
    t_end = time.monotonic() + seconds * 1.2
    pings = set()
    while time.monotonic() < t_end:
        s = sd.show("ActiveState", "MainPID", "NRestarts", "WatchdogTimestampMonotonic")
        assert (s["ActiveState"], s["MainPID"], s["NRestarts"]) == ("active", str(main), "0"), s
        pings.add(int(s["WatchdogTimestampMonotonic"]))
        time.sleep(1)  # sampling a steady state over a period, not waiting for a condition
    # pinged at start-up, then every interval / 2: three pings in 1.2 intervals (one every interval: two)
    assert len(pings - {0}) >= 3, f"only {len(pings - {0})} distinct WATCHDOG=1 times in {seconds * 1.2:g} s"


def test_watchdog_pings_keep_the_manager_alive_and_a_hung_one_is_restarted(sd):
    # a 2 s interval (a drop-in over the unit's own) so the hung manager is caught quickly
    sd.dropin("watchdog", "[Service]\nWatchdogSec=2s\n")
    assert sd.prop("DropInPaths") == f"{DROPIN_DIR}/watchdog.conf"
    sd.start()
    assert sd.prop("WatchdogUSec") == "2s"
    main = sd.main_pid()
    env = sd.sh("cat", f"/proc/{main}/environ").out.split("\0")
    assert "WATCHDOG_USEC=2000000" in env

    # 7 s, more than three watchdog intervals: still the same process, and fresh pings all along (one a second)
    t_end = time.monotonic() + 7
    pings = set()
    while time.monotonic() < t_end:
        s = sd.show("ActiveState", "MainPID", "NRestarts", "WatchdogTimestampMonotonic")
        assert (s["ActiveState"], s["MainPID"], s["NRestarts"]) == ("active", str(main), "0"), s
        pings.add(int(s["WatchdogTimestampMonotonic"]))
        time.sleep(0.25)  # sampling a steady state over a period, not waiting for a condition
    assert len(pings) >= 5, f"only {len(pings)} distinct WATCHDOG=1 times seen in 7 s"

    # the control: a manager that stops pinging is killed by the watchdog and restarted
    sd.kill("STOP", main)
    wait_for(lambda: (s := sd.active())["MainPID"] not in ("0", str(main)) and s["ActiveState"] == "active",
             20, "the watchdog to restart a hung manager")
    assert "Watchdog timeout" in sd.journal()
    assert int(sd.prop("NRestarts")) == 1
