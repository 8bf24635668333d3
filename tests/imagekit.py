"""What the image tests build with real tools: a distribution registry on 127.0.0.1 (Debian's docker-registry, with
a config of our own: loopback only, storage in a temp dir, no auth), and multi-layer OCI images made with umoci from
the built-in busybox tree, pushed with skopeo."""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import stat
import subprocess
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable

from manager.images.builtin import _build_busybox
from tests.harness import wait_for


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Registry:
    """docker-registry serving 127.0.0.1:<free port> from a temp dir; stop() removes the process and the dir.
    With auth (user, password): htpasswd auth (a bcrypt entry made by apache2-utils' htpasswd)."""

    def __init__(self, auth: tuple[str, str] | None = None) -> None:
        self.dir = tempfile.mkdtemp(prefix="shimd-registry-")
        self.port = free_port()
        self.addr = f"127.0.0.1:{self.port}"
        config = os.path.join(self.dir, "config.yml")
        text = (f"version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {self.dir}/data\n"
                f"  delete:\n    enabled: true\nhttp:\n  addr: {self.addr}\n")
        if auth:
            with open(os.path.join(self.dir, "htpasswd"), "w") as f:
                f.write(run("htpasswd", "-Bbn", *auth))
            text += f"auth:\n  htpasswd:\n    realm: shimd-test\n    path: {self.dir}/htpasswd\n"
        self.auth = auth
        with open(config, "w") as f:
            f.write(text)
        self.log = open(os.path.join(self.dir, "registry.log"), "wb")
        self.proc = subprocess.Popen(["docker-registry", "serve", config], stdout=self.log, stderr=self.log,
                                     stdin=subprocess.DEVNULL)
        wait_for(self._up, 20, f"docker-registry on {self.addr}")

    def _up(self) -> bool:
        assert self.proc.poll() is None, open(self.log.name).read()
        try:
            with urllib.request.urlopen(f"http://{self.addr}/v2/", timeout=2) as r:
                return r.status == 200
        except urllib.error.HTTPError as e:
            return e.code == 401 and self.auth is not None  # up, and asking for credentials
        except OSError:
            return False

    def authfile(self, path: str, user: str, password: str) -> str:
        """A docker-style auth file at path with these credentials for this registry."""
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        with open(path, "w") as f:
            json.dump({"auths": {self.addr: {"auth": token}}}, f)
        return path

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def run(*argv: str) -> str:
    p = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, f"{' '.join(argv)}: {p.stderr.strip()}"
    return p.stdout


class Layout:
    """An OCI layout built with umoci: each layer() unpacks the last tag, lets a function change the tree, and
    repacks it as the next tag (umoci writes whiteouts for what was removed)."""

    def __init__(self, base_dir: str) -> None:
        self.dir = os.path.join(base_dir, "layout")
        self.work = base_dir
        run("umoci", "init", "--layout", self.dir)
        run("umoci", "new", "--image", f"{self.dir}:empty")
        self.last = "empty"
        self.n = 0

    def layer(self, tag: str, change: Callable[[str], None]) -> None:
        self.n += 1
        bundle = os.path.join(self.work, f"bundle{self.n}")
        run("umoci", "unpack", "--image", f"{self.dir}:{self.last}", bundle)
        change(os.path.join(bundle, "rootfs"))
        run("umoci", "repack", "--image", f"{self.dir}:{tag}", bundle)
        shutil.rmtree(bundle)
        self.last = tag

    def config(self, tag: str, *flags: str) -> None:
        run("umoci", "config", "--image", f"{self.dir}:{tag}", *flags)

    def push(self, tag: str, dest: str, *flags: str) -> None:
        run("skopeo", "copy", "--dest-tls-verify=false", *flags, f"oci:{self.dir}:{tag}", f"docker://{dest}")


def busybox_tree(rootfs: str) -> None:
    tmp = rootfs + ".bb"
    _build_busybox(tmp)
    for name in os.listdir(tmp):
        shutil.move(os.path.join(tmp, name), os.path.join(rootfs, name))
    os.rmdir(tmp)
    os.makedirs(os.path.join(rootfs, "data", "dir"))
    for rel, text in (("data/gone.txt", "deleted later\n"), ("data/dir/old.txt", "old\n"),
                      ("data/kept.txt", "kept\n")):
        with open(os.path.join(rootfs, rel), "w") as f:
            f.write(text)


def delete_a_file(rootfs: str) -> None:
    os.unlink(os.path.join(rootfs, "data", "gone.txt"))


def replace_a_directory(rootfs: str) -> None:
    shutil.rmtree(os.path.join(rootfs, "data", "dir"))
    os.makedirs(os.path.join(rootfs, "data", "dir"))
    with open(os.path.join(rootfs, "data", "dir", "new.txt"), "w") as f:
        f.write("new\n")


def link_and_setuid(rootfs: str) -> None:
    path = os.path.join(rootfs, "data", "suid")
    with open(path, "w") as f:
        f.write("#!/bin/sh\necho suid\n")
    os.chmod(path, 0o4755)
    os.link(path, os.path.join(rootfs, "data", "hardlink"))
    os.utime(path, (1_000_000_000, 1_000_000_000))


def app_image(work: str) -> Layout:
    """base (busybox + /data), then a layer deleting a file, one replacing a directory, one with a hard link and a
    setuid file; tagged base, del, dir, app (the last with a config: entrypoint, cmd, env, workdir, labels...)."""
    lay = Layout(work)
    lay.layer("base", busybox_tree)
    lay.config("base", "--config.cmd", "sh")
    lay.layer("del", delete_a_file)
    lay.layer("dir", replace_a_directory)
    lay.layer("app", link_and_setuid)
    lay.config("app", "--config.entrypoint", "/bin/echo", "--config.cmd", "from-image-cmd",
               "--config.env", "APP=1", "--config.env", "PATH=/bin:/sbin", "--config.workingdir", "/data",
               "--config.label", "org.test=yes", "--config.stopsignal", "SIGUSR1", "--config.user", "nobody")
    return lay


def is_whiteout(path: str) -> bool:
    st = os.lstat(path)
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0



def add_index(lay: Layout, tag: str, platforms: dict[str, str]) -> None:
    """Tag a multi-platform index in lay: {"linux/amd64": "app", ...}, each platform the manifest of that tag."""
    import hashlib

    with open(os.path.join(lay.dir, "index.json")) as f:
        top = json.load(f)
    by_tag = {m["annotations"]["org.opencontainers.image.ref.name"]: m for m in top["manifests"]}
    manifests = []
    for platform, src in platforms.items():
        os_, arch = platform.split("/")
        d = {k: by_tag[src][k] for k in ("mediaType", "digest", "size")}
        manifests.append({**d, "platform": {"os": os_, "architecture": arch}})
    blob = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                       "manifests": manifests}).encode()
    digest = hashlib.sha256(blob).hexdigest()
    with open(os.path.join(lay.dir, "blobs", "sha256", digest), "wb") as f:
        f.write(blob)
    top["manifests"].append({"mediaType": "application/vnd.oci.image.index.v1+json", "digest": f"sha256:{digest}",
                             "size": len(blob), "annotations": {"org.opencontainers.image.ref.name": tag}})
    with open(os.path.join(lay.dir, "index.json"), "w") as f:
        json.dump(top, f)
