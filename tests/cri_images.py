"""The stand-in images of the CRI conformance suite (critest, cri-tools v1.26.1), built offline with umoci from
Debian's dynamically linked busybox, and cached under /var/cache/shimd-tests/cri-images-<hash of this file>.

critest pulls upstream images (registry.k8s.io/pause:3.6, registry.k8s.io/e2e-test-images/..., and
gcr.io/k8s-staging-cri-tools/...); the machines have no internet. Each stand-in holds what the specs of
/tmp/crit/pkg/validate run in it, nothing more:

- busybox applets as HARD links in /bin: with symlinks, masking /bin/ls (the MaskedPaths spec) masks busybox and
  sh with it. The DYNAMIC busybox (package `busybox`, not busybox-static) with the libraries ldd names: the static
  one runs `ls` inside its shell, so `sh -c ls` never meets the masked file. The package conflicts with
  busybox-static (which the project's built-in image needs), so its .deb is unpacked here, never installed.
- `pgrep` and `ipcs` (critest runs both; Debian's busybox has neither): shell scripts reading /proc.
- nginx (and hostnet-nginx on port 12003): a master process whose comm is `nginx` (busybox pidof), whose argv[0]
  holds "nginx: master process" (critest greps /proc/1/cmdline, and busybox grep stops at the first NUL), and
  that writes /var/run/nginx.pid; busybox httpd serves an index page as its child.
- httpd: prints the line "... Command line: 'httpd -D FOREGROUND'" that the multi-container log spec looks for.
- pause: waits on a child that is not named sleep (the pod's containers share its PID namespace and run
  `pgrep sleep`), reaps the pod's orphans (ash's `wait` waits on any child), exits 0 on SIGTERM/SIGINT.
- nonewprivs: a setuid-root program printing "Effective uid: N" (compiled here with Debian's gcc, static).
- the gcr.io test images: distinct images (a file of their own each: image ids never collide), one image under
  three tags, users given by the image config, a user with a group defined in /etc/group.

`ensure_images()` returns the OCI layout (built once, under a lock); `IMAGES` maps each name critest uses to its tag
in that layout; `push_all` copies them to a registry as <registry>/<name> (the repo path scheme of critest_env).
"""

from __future__ import annotations

import fcntl
import glob
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable

CACHE_ROOT = "/var/cache/shimd-tests"
K8S = "registry.k8s.io"
E2E = f"{K8S}/e2e-test-images"
STAGING = "gcr.io/k8s-staging-cri-tools"
PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
TOOLS = {"umoci": "umoci", "skopeo": "skopeo", "docker-registry": "docker-registry", "gcc": "gcc"}

# name critest pulls -> tag in the OCI layout
IMAGES: dict[str, str] = {
    f"{K8S}/pause:3.6": "pause",
    f"{E2E}/busybox:1.29-2": "busybox",
    f"{E2E}/nginx:1.14-2": "nginx",
    f"{E2E}/httpd:2.4.39-4": "httpd",
    f"{E2E}/nonewprivs:1.3": "nonewprivs",
    f"{STAGING}/hostnet-nginx-amd64:latest": "hostnet-nginx",
    f"{STAGING}/test-image-latest:latest": "test-image-latest",
    f"{STAGING}/test-image-tag:test": "test-image-tag-test",
    f"{STAGING}/test-image-tag:all": "test-image-tag-all",
    f"{STAGING}/test-image-1:latest": "test-image-1",
    f"{STAGING}/test-image-2:latest": "test-image-2",
    f"{STAGING}/test-image-3:latest": "test-image-3",
    f"{STAGING}/test-image-tags:1": "test-image-tags",
    f"{STAGING}/test-image-tags:2": "test-image-tags",
    f"{STAGING}/test-image-tags:3": "test-image-tags",
    f"{STAGING}/test-image-user-uid:latest": "user-uid",
    f"{STAGING}/test-image-user-username:latest": "user-username",
    f"{STAGING}/test-image-user-uid-group:latest": "user-uid-group",
    f"{STAGING}/test-image-user-username-group:latest": "user-username-group",
    f"{STAGING}/test-image-predefined-group:latest": "predefined-group",
}
DEFAULT_IMAGE = f"{E2E}/busybox:1.29-2"
WEB_SERVER_IMAGE = f"{E2E}/nginx:1.14-2"


class ImageBuildError(Exception):
    """A step of building or pushing the stand-in images failed; says which, with the tool's output."""


def run(*cmd: str, cwd: str | None = None, timeout: float = 300) -> str:
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, timeout=timeout, stdin=subprocess.DEVNULL)
    if p.returncode != 0:
        raise ImageBuildError(f"{' '.join(cmd)} -> {p.returncode}: {(p.stderr or p.stdout).strip()[-2000:]}")
    return p.stdout


def ensure_tools() -> None:
    """apt-get install what is missing (umoci, skopeo, docker-registry, gcc), and only that."""
    missing = [pkg for binary, pkg in TOOLS.items() if not shutil.which(binary)]
    if missing:
        run("apt-get", "install", "-y", "--no-install-recommends", *missing, timeout=900)


# --- files of the images -------------------------------------------------------------------------------------

PASSWD = """root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/bin/false
bin:x:2:2:bin:/bin:/bin/false
sys:x:3:3:sys:/dev:/bin/false
www-data:x:33:33:www-data:/var/www:/bin/false
nobody:x:65534:65534:nobody:/home:/bin/false
"""
GROUP = """root:x:0:
daemon:x:1:
bin:x:2:
sys:x:3:
tty:x:5:
www-data:x:33:
users:x:100:
nogroup:x:65534:
"""
# test-image-predefined-group: `adduser -u 1000 -D default-user; addgroup -g 50000 group-defined-in-image;
# addgroup default-user group-defined-in-image` on busybox
PREDEFINED_PASSWD = PASSWD + "default-user:x:1000:1000:Linux User,,,:/home/default-user:/bin/sh\n"
PREDEFINED_GROUP = GROUP + "default-user:x:1000:\ngroup-defined-in-image:x:50000:default-user\n"

PGREP = r"""#!/bin/sh
# pgrep PATTERN (stand-in: Debian's busybox has no pgrep): the pids of the processes whose name (comm) matches the
# extended regular expression PATTERN, this one excepted; exit 1 when there is none, as procps' pgrep does.
[ $# -eq 1 ] || { echo "usage: pgrep PATTERN" >&2; exit 2; }
self=$$
for d in /proc/[0-9]*; do
    read -r name < "$d/comm" && echo "${d#/proc/} $name"
done 2>/dev/null | awk -v pat="$1" -v self="$self" '$1 != self && $2 ~ pat { print $1; n++ } END { exit n ? 0 : 1 }'
"""

IPCS = r"""#!/bin/sh
# ipcs [-m] (stand-in: Debian's busybox has no ipcs): the System V shared memory segments of the caller's IPC
# namespace, read from /proc/sysvipc/shm, in util-linux's columns (key shown in decimal).
echo
echo "------ Shared Memory Segments --------"
echo "key        shmid      owner      perms      bytes      nattch     status"
awk 'NR > 1 { printf "%-10s %-10s %-10s %-10s %-10s %-10s\n", $1, $2, $8, $3, $4, $7 }' /proc/sysvipc/shm
echo
"""

PAUSE = """#!/bin/sh
# The pod's sandbox (stand-in for registry.k8s.io/pause): waits on a child forever; ash's `wait` waits on any
# child, so orphans of the pod's PID namespace are reaped; SIGTERM or SIGINT: exit 0 at once, the child with it.
# The child is busybox's sleep under a hard link named pause: the pod's containers share this PID namespace, and
# critest's `pgrep sleep` in them must find nothing but their own sleeps.
pid=
trap 'kill $pid 2>/dev/null; exit 0' TERM INT
while :; do
    (exec -a sleep /usr/lib/pause/pause 3600) &
    pid=$!
    wait $pid
done
"""


def pause_files(root: str) -> None:
    os.makedirs(os.path.join(root, "usr/lib/pause"))
    os.link(os.path.join(root, "bin/busybox"), os.path.join(root, "usr/lib/pause/pause"))
    put(root, "/pause", PAUSE, 0o755)


SERVE = """#!/bin/sh
# serve PORT DIR [PIDFILE]: busybox httpd serving DIR on PORT as a child; this shell writes its pid to PIDFILE,
# reaps, and exits 0 on SIGTERM, SIGINT or SIGQUIT (a PID 1 without handlers would ignore them).
port=$1 dir=$2 pidfile=$3
[ -n "$pidfile" ] && echo $$ > "$pidfile"
httpd -f -p "$port" -h "$dir" &
child=$!
trap 'kill $child 2>/dev/null; [ -n "$pidfile" ] && rm -f "$pidfile"; exit 0' TERM INT QUIT
wait $child
"""

# /usr/sbin/nginx: re-exec as busybox's sh (its applet comes from argv[0]'s last path part, "sh") through a hard
# link named nginx (so comm and `pidof nginx` say nginx), with argv[0] reading like nginx's rewritten title.
NGINX = """#!/bin/sh
# nginx (stand-in): see /usr/lib/nginx/serve; the port comes from the image's NGINX_PORT
exec -a "nginx: master process /bin/sh" /usr/lib/nginx/nginx /usr/lib/nginx/serve "${NGINX_PORT:-80}" \\
    /usr/share/nginx/html /var/run/nginx.pid
"""

HTTPD_FOREGROUND = """#!/bin/sh
# httpd-foreground (stand-in for the httpd image): Apache's start-up line, then busybox httpd on port 80
echo "[mpm_event:notice] [pid $$:tid 1] AH00489: Apache/2.4.39 (Unix) configured -- resuming normal operations"
echo "[core:notice] [pid $$:tid 1] AH00094: Command line: 'httpd -D FOREGROUND'" >&2
exec /usr/lib/nginx/serve 80 /usr/local/apache2/htdocs
"""

NNP_C = r"""#include <stdio.h>
#include <unistd.h>
/* nonewprivs (stand-in): installed setuid root; prints the effective uid it runs with */
int main(void) { printf("Effective uid: %d\n", (int)geteuid()); return 0; }
"""

INDEX = "<html><body><h1>Welcome to nginx!</h1><p>(a stand-in for critest)</p></body></html>\n"


def put(root: str, path: str, text: str, mode: int = 0o644) -> None:
    dest = os.path.join(root, path.lstrip("/"))
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    with open(dest, "w") as f:
        f.write(text)
    os.chmod(dest, mode)


# --- busybox -------------------------------------------------------------------------------------------------

def busybox_deb(work: str) -> str:
    """Debian's busybox .deb: from apt's cache when there, else `apt-get download` (the machine's apt sources)."""
    cached = sorted(glob.glob("/var/cache/apt/archives/busybox_*.deb"))
    if cached:
        return cached[-1]
    run("apt-get", "download", "busybox", cwd=work, timeout=300)
    debs = glob.glob(os.path.join(work, "busybox_*.deb"))
    if not debs:
        raise ImageBuildError(f"apt-get download busybox left no .deb in {work}")
    return debs[0]


def base_tree(work: str) -> str:
    """The root filesystem every stand-in starts from: busybox with hard-linked applets, its libraries, pgrep and
    ipcs, /etc/passwd and /etc/group, the usual directories."""
    unpacked = os.path.join(work, "deb")
    run("dpkg-deb", "-x", busybox_deb(work), unpacked)
    root = os.path.join(work, "base")
    for d in ("bin", "dev", "etc", "home", "proc", "root", "sys", "usr/bin", "usr/sbin", "usr/local/bin",
              "usr/lib", "var/run", "var/www"):
        os.makedirs(os.path.join(root, d), exist_ok=True)
    os.makedirs(os.path.join(root, "tmp"))
    os.chmod(os.path.join(root, "tmp"), 0o1777)
    busybox = os.path.join(root, "bin", "busybox")
    shutil.copy2(os.path.join(unpacked, "bin", "busybox"), busybox)
    for lib in re.findall(r"(/\S+) \(0x", run("ldd", busybox)):
        dest = os.path.join(root, lib.lstrip("/"))
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        shutil.copy2(os.path.realpath(lib), dest)
    for applet in run(busybox, "--list").split():
        link = os.path.join(root, "bin", applet)
        if not os.path.lexists(link):
            os.link(busybox, link)
    put(root, "/bin/pgrep", PGREP, 0o755)
    put(root, "/bin/ipcs", IPCS, 0o755)
    put(root, "/etc/passwd", PASSWD)
    put(root, "/etc/group", GROUP)
    return root


def nginx_files(root: str) -> None:
    os.makedirs(os.path.join(root, "usr/lib/nginx"), exist_ok=True)
    os.link(os.path.join(root, "bin/busybox"), os.path.join(root, "usr/lib/nginx/nginx"))
    put(root, "/usr/lib/nginx/serve", SERVE, 0o755)
    put(root, "/usr/sbin/nginx", NGINX, 0o755)
    put(root, "/usr/share/nginx/html/index.html", INDEX)


def httpd_files(root: str) -> None:
    nginx_files(root)  # the serve script and its hard link
    put(root, "/usr/local/bin/httpd-foreground", HTTPD_FOREGROUND, 0o755)
    put(root, "/usr/local/apache2/htdocs/index.html", "<html><body><h1>It works!</h1></body></html>\n")


def nonewprivs_files(work: str) -> Callable[[str], None]:
    src = os.path.join(work, "nnp.c")
    with open(src, "w") as f:
        f.write(NNP_C)
    binary = os.path.join(work, "nnp")
    run("gcc", "-static", "-Os", "-o", binary, src)

    def add(root: str) -> None:
        dest = os.path.join(root, "usr/local/bin/nnp")
        shutil.copy2(binary, dest)
        os.chown(dest, 0, 0)
        os.chmod(dest, 0o4755)
    return add


def marker(name: str) -> Callable[[str], None]:
    """A file of the image's own, so that no two test images share an id."""
    return lambda root: put(root, f"/{name}", f"{name}\n")


def predefined_group(root: str) -> None:
    put(root, "/etc/passwd", PREDEFINED_PASSWD)
    put(root, "/etc/group", PREDEFINED_GROUP)
    os.makedirs(os.path.join(root, "home/default-user"))
    os.chown(os.path.join(root, "home/default-user"), 1000, 1000)


# --- umoci ---------------------------------------------------------------------------------------------------

def add_image(layout: str, work: str, base: str, tag: str, files: Callable[[str], None] | None,
              config: list[str]) -> None:
    """Tag `tag` in the layout: the base tree plus what `files` adds, as one layer, with the given config."""
    ref = f"{layout}:{tag}"
    run("umoci", "new", "--image", ref)
    bundle = os.path.join(work, f"bundle-{tag}")
    run("umoci", "unpack", "--image", ref, bundle)
    rootfs = os.path.join(bundle, "rootfs")
    run("cp", "-a", f"{base}/.", rootfs)  # one cp: hard links stay hard links
    if files:
        files(rootfs)
    run("umoci", "repack", "--image", ref, bundle)
    shutil.rmtree(bundle)
    run("umoci", "config", "--image", ref, "--config.env", PATH, "--author", "shimd tests (critest stand-in)",
        *config)


def build(dest: str) -> None:
    """Build the OCI layout at dest (must not exist); everything happens in a temp dir renamed at the end."""
    ensure_tools()
    parent = os.path.dirname(dest)
    os.makedirs(parent, exist_ok=True)
    work = tempfile.mkdtemp(prefix=".build-", dir=parent)
    try:
        base = base_tree(work)
        layout = os.path.join(work, "layout")
        run("umoci", "init", "--layout", layout)
        nginx_cfg = ["--config.cmd", "nginx", "--config.cmd", "-g", "--config.cmd", "daemon off;",
                     "--config.stopsignal", "SIGQUIT"]
        specs: list[tuple[str, Callable[[str], None] | None, list[str]]] = [
            ("busybox", None, ["--config.cmd", "sh"]),
            ("pause", pause_files, ["--config.entrypoint", "/pause"]),
            ("nginx", nginx_files, nginx_cfg + ["--config.exposedports", "80/tcp"]),
            ("hostnet-nginx", nginx_files, nginx_cfg + ["--config.env", "NGINX_PORT=12003",
                                                        "--config.exposedports", "12003/tcp"]),
            ("httpd", httpd_files, ["--config.cmd", "httpd-foreground", "--config.workingdir", "/usr/local/apache2",
                                    "--config.exposedports", "80/tcp"]),
            ("nonewprivs", nonewprivs_files(work), ["--config.entrypoint", "/usr/local/bin/nnp"]),
            ("predefined-group", predefined_group, ["--config.cmd", "sh", "--config.user", "1000"]),
        ]
        for tag in ("test-image-latest", "test-image-tag-test", "test-image-tag-all", "test-image-1",
                    "test-image-2", "test-image-3", "test-image-tags"):
            specs.append((tag, marker(tag), ["--config.cmd", "sh"]))
        for tag, user in (("user-uid", "1002"), ("user-username", "www-data"), ("user-uid-group", "1003:1004"),
                          ("user-username-group", "www-data:1004")):
            specs.append((tag, marker(tag), ["--config.cmd", "sh", "--config.user", user]))
        for tag, files, config in specs:
            add_image(layout, work, base, tag, files, config)
        run("umoci", "gc", "--layout", layout)
        os.rename(layout, dest)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def source_hash() -> str:
    with open(__file__, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()[:16]


def ensure_images() -> str:
    """The OCI layout holding every stand-in (tags: the values of IMAGES), built on first use and kept under
    CACHE_ROOT/cri-images-<hash of this file>; concurrent callers wait on a lock for one build."""
    dest = os.path.join(CACHE_ROOT, f"cri-images-{source_hash()}")
    if os.path.isdir(dest):
        return dest
    os.makedirs(CACHE_ROOT, exist_ok=True)
    with open(os.path.join(CACHE_ROOT, ".cri-images.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not os.path.isdir(dest):
            build(dest)
    return dest


def push_all(layout: str, registry: str, wrap: list[str], names: dict[str, str] | None = None) -> None:
    """Copy every image of IMAGES (or names) from the layout to docker://<registry>/<name>, plain HTTP; skopeo runs
    under wrap (e.g. nsenter into the registry's network namespace)."""
    for name, tag in (IMAGES if names is None else names).items():
        run(*wrap, "skopeo", "copy", "--quiet", "--dest-tls-verify=false", f"oci:{layout}:{tag}",
            f"docker://{registry}/{name}", timeout=120)
