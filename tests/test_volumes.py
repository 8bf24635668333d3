"""Volumes and filesystems, checked inside running containers: host bind mounts (rw and ro), named volumes (made
on first use, the image's content copied in while empty, data kept after the container, rm refused while used),
tmpfs with options, a read-only root, -u, --hostname, --add-host, --dns; and bad input refused with one line
before anything is made."""

from __future__ import annotations

import json
import os

import pytest

pytestmark = pytest.mark.timeout(120)


def test_host_paths_are_bind_mounted_read_write_or_read_only(env, tmp_path):
    host = tmp_path / "data"
    host.mkdir()
    (host / "in.txt").write_text("from the host\n")
    out = env.ok("run", "--rm", "-v", f"{host}:/data", "-v", f"{host}:/ro:ro", "busybox", "sh", "-c",
                 "cat /data/in.txt; echo written > /data/out.txt; echo x > /ro/no.txt || echo refused").out
    assert out == "from the host\nrefused\n"
    assert (host / "out.txt").read_text() == "written\n" and not (host / "no.txt").exists()


def test_a_named_volume_gets_the_images_content_once_and_keeps_its_data_after_the_container(env):
    c1 = env.name("one")
    env.ok("run", "--name", c1, "-v", "vol:/etc", "busybox", "sh", "-c", "echo mine > /etc/mine; ls /etc")
    vol = json.loads(env.ok("volume", "inspect", "vol").out)[0]
    data = vol["mountpoint"]
    assert vol["containers"] == [c1] and os.path.isfile(os.path.join(data, "passwd"))  # copied from the image
    r = env.ctl("volume", "rm", "vol")
    assert r.rc == 1 and f"in use by {c1}" in r.err
    env.ok("rm", c1)
    assert open(os.path.join(data, "mine")).read() == "mine\n"
    # a second container sees the data, not a fresh copy; the volume is listed with no user
    assert env.ok("run", "--rm", "-v", "vol:/etc", "busybox", "cat", "/etc/mine").out == "mine\n"
    assert "vol" in env.ok("volume", "ls", "-q").out.split()
    env.ok("volume", "rm", "vol")
    assert not os.path.exists(data) and env.ctl("volume", "inspect", "vol").rc == 1


def test_volume_create_ls_inspect_rm(env):
    assert env.ok("volume", "create", "made").out == "made\n"
    assert env.ctl("volume", "create", "made").rc == 1
    assert env.ctl("volume", "create", "../x").rc == 1
    ls = env.ok("volume", "ls").out
    assert "VOLUME NAME" in ls and "made" in ls
    assert env.ok("volume", "rm", "made").out == "made\n"
    r = env.ctl("volume", "rm", "made")
    assert r.rc == 1 and "no such volume: made" in r.err


def test_tmpfs_read_only_root_and_user(env):
    out = env.ok("run", "--rm", "--read-only", "--tmpfs", "/scratch:size=1m,mode=1777",
                 "--tmpfs", "/private:mode=700", "-u", "65534:65534",
                 "busybox", "sh", "-c", "id; grep ' /scratch ' /proc/mounts; stat -c %a /private; "
                 "echo ok > /scratch/f && cat /scratch/f; touch /root-file 2>/dev/null || echo read-only").out
    lines = out.splitlines()
    assert lines[0].startswith("uid=65534(nobody) gid=65534(nogroup)")
    assert "tmpfs" in lines[1] and "size=1024k" in lines[1] and "nosuid" in lines[1]
    assert lines[2:] == ["700", "ok", "read-only"]
    assert env.ok("run", "--rm", "-u", "nobody", "busybox", "id", "-u").out == "65534\n"


@pytest.mark.parametrize("flags,words", [
    (["-v", "relative/path:/data"], "must be absolute"),
    (["-v", "./here:/data"], "must be absolute"),
    (["-v", "/nonexistent-shimd-path:/data"], "does not exist"),
    (["-v", "/tmp/../etc:/data"], "may not contain '..'"),
    (["-v", "/tmp:/data/../../etc"], "may not contain '..'"),
    (["-v", "/tmp:data"], "must be an absolute path"),
    (["-v", "/tmp:/"], "cannot mount over the container's root"),
    (["-v", "/tmp:/data:rx"], "the options are ro or rw and one propagation"),
    (["-v", "/tmp"], "use /HOST/PATH:/CONTAINER/PATH"),
    (["-v", "/tmp:/a", "--tmpfs", "/a"], "mounted twice"),
    (["--tmpfs", "/t:exec=1"], "invalid tmpfs option"),
    (["--tmpfs", "t"], "must be an absolute path"),
    (["-u", "nosuchuser"], "unable to find user"),
    (["--add-host", "db"], "use HOST:IP"),
    (["--add-host", "db:999.1.1.1"], "is not an IP address"),
    (["--dns", "resolver"], "is not an IP address"),
])
def test_bad_mount_input_is_one_line_and_nothing_is_made(env, flags, words):
    r = env.ctl("run", "--rm", "--name", env.name("bad"), *flags, "busybox", "true")
    assert r.rc == 125 and r.err.count("\n") == 1 and words in r.err, r.err
    assert env.ok("ps", "-a", "-q").out == "" and env.ok("volume", "ls", "-q").out == ""


def test_a_later_bad_host_path_makes_no_volume_of_an_earlier_flag(env):
    r = env.ctl("run", "--rm", "-v", "early:/a", "-v", "/nonexistent-shimd-path:/b", "busybox", "true")
    assert r.rc == 125 and "does not exist" in r.err
    assert env.ok("volume", "ls", "-q").out == ""


def test_hostname_add_host_and_dns_are_in_the_containers_etc_files(env):
    out = env.ok("run", "--rm", "--hostname", "box", "--add-host", "db:10.1.2.3", "--add-host", "v6:[fd00::1]",
                 "--dns", "192.0.2.53", "busybox", "sh", "-c", "hostname; cat /etc/hosts /etc/resolv.conf").out
    lines = out.splitlines()
    assert lines[0] == "box"
    assert "10.1.2.3\tdb" in lines and "fd00::1\tv6" in lines and "127.0.1.1\tbox" in lines
    assert [x for x in lines if x.startswith("nameserver")] == ["nameserver 192.0.2.53"]
