"""The image the systemd test boots: a minimal Debian with systemd, built once and cached as tarballs.

Two cached layers under /var/cache/shimd-tests/, each keyed by a hash of what went in:
- `base-*.tar` is `debootstrap --variant=minbase` with systemd, dbus, python3, python3-venv, runc and
  busybox-static (about 50 s, made once). The Debian mirror is the one the machine's apt sources use for SUITE
  (one-line `.list` files and deb822 `.sources` files); with none configured the build stops with a one-line
  message saying so. No mirror address is written anywhere in the project.
- `image-*.tar` adds a venv at /opt/shimd holding the project's dependencies, from wheels the host's pip builds
  (`pip wheel`, with the host's own index configuration) and installs offline inside (`chroot ... pip install
  --no-index`). Its key is the base key plus the dependency list of pyproject.toml, so it is rebuilt when the
  dependencies change and not when the source changes.

The project itself is never baked in (install_project): the work tree is bind-mounted read-only at /src and a
`.pth` file puts /src on the venv's path, which is what an editable install does. Each run thus tests the current
source, with no build step and nothing written into the work tree.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Callable

from tests.harness import REPO

CACHE = "/var/cache/shimd-tests"
SUITE = "bookworm"
PACKAGES = ["systemd", "systemd-sysv", "dbus", "python3", "python3-venv", "runc", "busybox-static",
            "containernetworking-plugins", "iptables",  # containers get the bridge network by default
            "golang-github-containers-common"]  # the seccomp profile (debootstrap needs the real package name)
VENV = "/opt/shimd"
INNER_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8",
             "HOME": "/root", "SYSTEMD_PAGER": "", "SYSTEMD_COLORS": "0"}
APT_SOURCES = "/etc/apt/sources.list"


class NoMirror(Exception):
    """The machine's apt configuration names no Debian mirror for SUITE."""


def apt_sources(etc: str = APT_SOURCES) -> list[str]:
    """The files apt reads its sources from: sources.list, then sources.list.d/*.list and *.sources."""
    d = f"{etc}.d"
    return [etc, *sorted(glob.glob(os.path.join(d, "*.list")) + glob.glob(os.path.join(d, "*.sources")))]


def _deb822_mirror(text: str, suite: str) -> str | None:
    for stanza in re.split(r"\n[ \t]*\n", text):
        fields = {k.lower(): v for k, v in re.findall(r"^([A-Za-z][\w-]*):[ \t]*(.*)$", stanza, re.M)}
        if fields.get("enabled", "yes").strip().lower() == "no" or "deb" not in fields.get("types", "").split():
            continue
        if suite in fields.get("suites", "").split() and "main" in fields.get("components", "").split():
            uris = fields.get("uris", "").split()
            if uris:
                return uris[0]
    return None


def _one_line_mirror(text: str, suite: str) -> str | None:
    for line in text.splitlines():
        m = re.match(r"^deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+(\S+)\s+(.*)$", line.split("#", 1)[0].strip())
        if m and m.group(2) == suite and "main" in m.group(3).split():
            return m.group(1)
    return None


def apt_mirror(files: list[str] | None = None, suite: str = SUITE) -> str:
    """The Debian mirror the machine's apt sources use for suite's main component; NoMirror when none does."""
    files = apt_sources() if files is None else files
    for path in files:
        try:
            with open(path) as f:
                text = f.read()
        except OSError:
            continue
        found = (_deb822_mirror if path.endswith(".sources") else _one_line_mirror)(text, suite)
        if found:
            return found
    raise NoMirror(f"no Debian mirror for '{suite} main' in the apt sources ({', '.join(files) or 'none'}): "
                   f"configure one to build the systemd test image")


def _key(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def _pyproject() -> dict:
    with open(os.path.join(REPO, "pyproject.toml"), "rb") as f:
        return tomllib.load(f)["project"]


def _run(cmd: list[str], what: str, timeout: float, **kw) -> None:
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL, **kw)
    if p.returncode != 0:
        raise RuntimeError(f"{what} failed ({p.returncode}): {' '.join(cmd)}\n{(p.stdout + p.stderr)[-3000:]}")


def _tar_to(src_dir: str, dest: str) -> None:
    """Tar src_dir into dest atomically, then drop other tarballs of the same layer (the cache does not grow)."""
    tmp = f"{dest}.tmp{os.getpid()}"
    _run(["tar", "-C", src_dir, "--numeric-owner", "-cf", tmp, "."], "tar", 300)
    os.rename(tmp, dest)
    layer = os.path.basename(dest).split("-")[0]
    for old in glob.glob(os.path.join(CACHE, f"{layer}-*.tar")):
        if old != dest:
            os.unlink(old)


def untar(tarball: str, dest: str) -> None:
    _run(["tar", "-C", dest, "--numeric-owner", "-xpf", tarball], "untar", 300)
    os.chmod(dest, 0o755)  # "/" must be searchable by the container's system users (dbus)


def _chroot(root: str, *cmd: str, timeout: float = 300) -> None:
    _run(["chroot", root, *cmd], f"chroot {' '.join(cmd)}", timeout, env=INNER_ENV)


def base_tarball(log: Callable[[str], None]) -> str:
    key = _key(SUITE, "minbase", PACKAGES)
    path = os.path.join(CACHE, f"base-{key}.tar")
    if os.path.exists(path):
        return path
    mirror = apt_mirror()
    os.makedirs(CACHE, exist_ok=True)  # a new machine: no test has made it yet
    build = tempfile.mkdtemp(prefix="build-base-", dir=CACHE)
    os.chmod(build, 0o755)  # the rootfs's "/"
    try:
        t0 = time.monotonic()
        _run(["debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}", SUITE, build, mirror],
             "debootstrap", 800)
        for junk in ("var/cache/apt/archives/*.deb", "var/lib/apt/lists/*_*", "usr/share/doc/*", "usr/share/man/*"):
            for p in glob.glob(os.path.join(build, junk)):
                shutil.rmtree(p) if os.path.isdir(p) and not os.path.islink(p) else os.unlink(p)
        _tar_to(build, path)
        log(f"built {path} with debootstrap (mirror from the apt sources) in {time.monotonic() - t0:.0f}s")
    finally:
        shutil.rmtree(build, ignore_errors=True)
    return path


def image_tarball(log: Callable[[str], None]) -> str:
    """The base plus a venv with the project's dependencies (not the project itself)."""
    base = base_tarball(log)
    deps = sorted(_pyproject()["dependencies"])
    path = os.path.join(CACHE, f"image-{_key(os.path.basename(base), deps)}.tar")
    if os.path.exists(path):
        return path
    build = tempfile.mkdtemp(prefix="build-image-", dir=CACHE)
    os.chmod(build, 0o755)  # the rootfs's "/"
    try:
        t0 = time.monotonic()
        untar(base, build)
        inner_py = subprocess.run(["chroot", build, "python3", "-c", "import sys; print(sys.version_info[:2])"],
                                  capture_output=True, text=True, env=INNER_ENV, check=True).stdout.strip()
        assert inner_py == str(sys.version_info[:2]), f"wheels for {sys.version_info[:2]} cannot go to {inner_py}"
        wheels = os.path.join(build, "tmp", "wheels")
        os.makedirs(wheels)
        _run([sys.executable, "-m", "pip", "wheel", "-q", "-w", wheels, *deps], "pip wheel", 600)
        _chroot(build, "python3", "-m", "venv", VENV)
        _chroot(build, f"{VENV}/bin/pip", "install", "-q", "--no-index", "--find-links", "/tmp/wheels", *deps)
        shutil.rmtree(wheels)
        _chroot(build, f"{VENV}/bin/python", "-m", "compileall", "-q", VENV)
        _tar_to(build, path)
        log(f"built {path} in {time.monotonic() - t0:.0f}s")
    finally:
        shutil.rmtree(build, ignore_errors=True)
    return path


def install_project(root: str) -> None:
    """Make /src (the bind-mounted work tree) the installed project: a .pth on the venv's path, the console
    scripts of [project.scripts] in the venv, and links to them in /usr/local/bin (so the unit's ExecStart runs
    unchanged)."""
    (site,) = glob.glob(os.path.join(root, VENV.lstrip("/"), "lib", "python3*", "site-packages"))
    with open(os.path.join(site, "_shimd_src.pth"), "w") as f:
        f.write("/src\n")
    for name, target in _pyproject()["scripts"].items():
        module, func = target.split(":")
        script = os.path.join(root, VENV.lstrip("/"), "bin", name)
        with open(script, "w") as f:
            f.write(f"#!{VENV}/bin/python\nimport sys\nfrom {module} import {func}\n"
                    f"if __name__ == '__main__':\n    sys.exit({func}())\n")
        os.chmod(script, 0o755)
        link = os.path.join(root, "usr", "local", "bin", name)
        if os.path.lexists(link):
            os.unlink(link)
        os.symlink(f"{VENV}/bin/{name}", link)
