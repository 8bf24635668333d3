"""The only home of the shim's raw syscalls: prctl, wait4, spawn, mount, unshare, mkfifo, kill (ctypes lives here)."""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import re
import signal
import time

from shimproto.spec import MOUNT_DATA_MAX, overlay_data

PR_SET_CHILD_SUBREAPER = 36
PR_SET_MEMORY_MERGE = 67
CLONE_NEWNS = 0x00020000
CLONE_NEWNET = 0x40000000
MS_BIND = 4096
MS_REC = 0x4000
MS_SLAVE = 1 << 19
MS_SHARED = 1 << 20
MNT_DETACH = 2

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
_libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
_libc.unshare.argtypes = [ctypes.c_int]


def _check(ret: int, what: str) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def set_child_subreaper() -> None:
    """Become the parent of every orphan below us (the container init once `runc create` exits)."""
    _check(_libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0), "prctl(PR_SET_CHILD_SUBREAPER)")


def private_mount_namespace(shared: tuple[str, ...] | list[str] = ()) -> None:
    """Move into a mount namespace of our own whose mounts receive the host's but never leak back.

    The container's writable root is mounted here, so it exists exactly as long as the shim (and the container)
    do, whatever mount namespace the manager that launched us lived in.

    shared: the sources of the container's rshared volumes. A mount at or below one of them stays a peer of the
    host's (when it is shared there), so what the container mounts in the volume reaches the host, as with
    containerd; every other mount becomes a slave, one by one.
    """
    _check(_libc.unshare(CLONE_NEWNS), "unshare(CLONE_NEWNS)")
    if not shared:
        _check(_libc.mount(b"none", b"/", None, MS_REC | MS_SLAVE, None), "mount --make-rslave /")
        return
    keep = tuple(os.path.realpath(p).rstrip("/") + "/" for p in shared)
    for point, is_shared in mount_points():
        if is_shared and not (point.rstrip("/") + "/").startswith(keep):
            _check(_libc.mount(b"none", point.encode(), None, MS_SLAVE, None), f"mount --make-slave {point}")


def mount_points(mountinfo: str = "/proc/self/mountinfo") -> list[tuple[str, bool]]:
    """(mount point, shared?) of every mount of our namespace, parents first (octal escapes such as \\040 undone)."""
    out = []
    with open(mountinfo) as f:
        for line in f:
            fields = line.split(" - ", 1)[0].split()
            point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[4])
            out.append((point, any(f.startswith("shared:") for f in fields[6:])))
    return out


def mount_overlay(lower: str, upper: str, work: str, target: str) -> None:
    """lower: one directory or several, ':'-joined, top first."""
    data = overlay_data(lower, upper, work).encode()
    if len(data) > MOUNT_DATA_MAX:
        raise OSError(errno.E2BIG, f"mount overlay on {target}: {len(data)} bytes of options, more than a page")
    _check(_libc.mount(b"overlay", target.encode(), b"overlay", 0, data), f"mount overlay on {target}")


def make_shared(mount_point: str) -> None:
    """mount --make-shared on one mount point of the shim's own mount namespace (not recursive)."""
    _check(_libc.mount(b"none", mount_point.encode(), None, MS_SHARED, None), f"mount --make-shared {mount_point}")


def unmount(target: str) -> None:
    """Unmount target; a path that is not a mount point is fine (EINVAL/ENOENT)."""
    if _libc.umount2(target.encode(), MNT_DETACH) != 0:
        err = ctypes.get_errno()
        if err not in (errno.EINVAL, errno.ENOENT):
            raise OSError(err, f"umount {target}: {os.strerror(err)}")


def pin_new_netns(pin: str) -> None:
    """Make a new network namespace and pin it by a bind mount on the (empty, regular) file pin, in the calling
    process's mount namespace (the shim's own: the pin is invisible elsewhere and goes with the shim).

    unshare(CLONE_NEWNET) moves only the calling thread, so it runs in a short-lived thread of its own: the shim's
    other threads and sockets stay in the host's namespace."""
    import threading

    errors: list[BaseException] = []

    def work() -> None:
        try:
            _check(_libc.unshare(CLONE_NEWNET), "unshare(CLONE_NEWNET)")
            src = f"/proc/self/task/{threading.get_native_id()}/ns/net".encode()
            _check(_libc.mount(src, pin.encode(), None, MS_BIND, None), f"bind mount a network namespace on {pin}")
        except BaseException as e:  # handed to the calling thread
            errors.append(e)

    fd = os.open(pin, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o444)
    os.close(fd)
    t = threading.Thread(target=work, name="netns-pin")
    t.start()
    t.join()
    if errors:
        raise errors[0]


def unpin_netns(pin: str) -> None:
    """Unmount and remove a pin made by pin_new_netns (the namespace goes once nothing else holds it)."""
    unmount(pin)
    try:
        os.unlink(pin)
    except FileNotFoundError:
        pass


def is_mounted(target: str) -> bool:
    real = os.path.realpath(target)
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == real for line in f)


def reap_all() -> list[tuple[int, int]]:
    """Reap every exited child without blocking: [(pid, wait status)]."""
    out = []
    while True:
        try:
            pid, status, _ = os.wait4(-1, os.WNOHANG)
        except ChildProcessError:
            return out
        if pid == 0:
            return out
        out.append((pid, status))


def spawn(argv: list[str], stdin: int | None, stdout: int | None, stderr: int | None,
          env: dict[str, str] | None, group: bool = False) -> int:
    """posix_spawn argv with the given fds as stdio (None: /dev/null); returns the pid and never waits. With group,
    the child leads a process group of its own (what it starts joins it), so that killpg ends them all.

    Signal dispositions and the mask are reset for the child: the shim's own handlers must not leak into runc.
    """
    actions: list[tuple] = []
    for target, fd in ((0, stdin), (1, stdout), (2, stderr)):
        if fd is None:
            actions.append((os.POSIX_SPAWN_OPEN, target, os.devnull, os.O_RDWR, 0))
        else:
            actions.append((os.POSIX_SPAWN_DUP2, fd, target))
    return os.posix_spawnp(
        argv[0], argv, env if env is not None else os.environ,
        file_actions=actions,
        setsigmask=(),
        setsigdef=(signal.SIGPIPE, signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGHUP),
        **({"setpgroup": 0} if group else {}),
    )


def kill_group(pgid: int, sig: int) -> bool:
    """Signal process group pgid; False when no process of it is left (or none is ours to signal)."""
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def mkfifo(path: str) -> None:
    try:
        os.mkfifo(path, 0o600)
    except FileExistsError:
        pass


def send_signal(pid: int, sig: int) -> None:
    """Signal a process we reaped nothing of yet (our child or orphan), so its pid cannot have been reused."""
    os.kill(pid, sig)


def kill_shims_of(state_dir: str) -> int:
    """SIGKILL every `shimd start` process serving state_dir and wait until they are gone; how many were killed.
    Scans again until a scan finds none: one may have been mid-fork (it daemonizes) during the previous scan."""
    import psutil

    killed = 0
    for _ in range(10):
        found = []
        for p in psutil.process_iter(["cmdline"]):
            cmd = p.info["cmdline"] or []
            if p.pid != os.getpid() and "start" in cmd and "--state" in cmd and \
                    cmd[cmd.index("--state") + 1:][:1] == [state_dir]:
                try:
                    p.kill()
                    found.append(p)
                except psutil.Error:
                    pass
        if not found:
            break
        killed += len(found)
        _wait_gone([p.pid for p in found], timeout=5.0)
    return killed


def _wait_gone(pids: list[int], timeout: float) -> None:
    """Wait until none of pids is a running process (a zombie counts as gone), without reaping any: the reaper
    is the only waiter. A pidfd turns readable when its process exits."""
    import select

    deadline = time.monotonic() + timeout
    for pid in pids:
        try:
            fd = os.pidfd_open(pid)
        except ProcessLookupError:
            continue
        try:
            select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        finally:
            os.close(fd)


def set_winsize(fd: int, rows: int, cols: int) -> None:
    import fcntl
    import struct
    import termios

    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def oom_eventfd_v1(memcg_dir: str) -> tuple[int, int]:
    """Ask cgroup v1 to signal an eventfd on every OOM in memcg_dir: (eventfd, oom_control fd), both to keep open."""
    efd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
    ofd = os.open(os.path.join(memcg_dir, "memory.oom_control"), os.O_RDONLY | os.O_CLOEXEC)
    try:
        with open(os.path.join(memcg_dir, "cgroup.event_control"), "w") as f:
            f.write(f"{efd} {ofd}")
    except OSError:
        os.close(efd)
        os.close(ofd)
        raise
    return efd, ofd


# --- the template (shimd/template.py): fork, parent death, a forked shim's command line -------------------------

PR_SET_PDEATHSIG = 1
PR_SET_MM = 35
PR_SET_MM_MAP = 14
_cmdline_keep: list = []  # the buffer a renamed process's /proc/<pid>/cmdline points at must live as long as it


class _MMMap(ctypes.Structure):
    _fields_ = [(n, ctypes.c_uint64) for n in ("start_code", "end_code", "start_data", "end_data", "start_brk",
                                                "brk", "start_stack", "arg_start", "arg_end", "env_start",
                                                "env_end", "auxv")] + \
               [("auxv_size", ctypes.c_uint32), ("exe_fd", ctypes.c_uint32)]


def fork() -> int:
    """fork(2): 0 in the child, the child's pid in the parent. The caller must not hold threads or a zmq context."""
    return os.fork()


def set_parent_death_signal(sig: int) -> None:
    """Be sent sig when the thread that started us exits (the template dies with its manager)."""
    _check(_libc.prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0), "prctl(PR_SET_PDEATHSIG)")


def set_memory_merge() -> None:
    """Offer every private page of this process and of the children it forks to the kernel's samepage merging
    (prctl PR_SET_MEMORY_MERGE, Linux 6.4): ksmd merges pages that hold the same bytes back into one, such as a
    shim's copies of the template's pages whose reference counts went up and down again. EINVAL on older kernels."""
    _check(_libc.prctl(PR_SET_MEMORY_MERGE, 1, 0, 0, 0), "prctl(PR_SET_MEMORY_MERGE)")


def ignore_child_exits() -> None:
    """Let the kernel reap our children (SIGCHLD ignored): the template never waits, and never leaves a zombie."""
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)


def default_child_exits() -> None:
    """Undo ignore_child_exits in a forked child: a shim's reaper must see its children's exits."""
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)


def set_cmdline(argv: list[str]) -> None:
    """Make /proc/self/cmdline read argv (what a cold `python -m shimd start ...` shows), so everything that
    finds a shim by its command line (the manager, `shimd delete`, ps) finds a forked one too.

    prctl(PR_SET_MM_MAP) with the current layout and a new argument area: needs CAP_SYS_RESOURCE or
    CAP_CHECKPOINT_RESTORE (Linux >= 5.9). Raises OSError when refused."""
    data = b"\0".join(a.encode() for a in argv) + b"\0"
    buf = ctypes.create_string_buffer(data, len(data))
    with open("/proc/self/stat") as f:
        st = f.read().rsplit(")", 1)[1].split()

    def field(n: int) -> int:  # proc(5) numbering; st starts at field 3
        return int(st[n - 3])

    _libc.sbrk.restype = ctypes.c_void_p
    _libc.sbrk.argtypes = [ctypes.c_ssize_t]
    m = _MMMap(start_code=field(26), end_code=field(27), start_data=field(45), end_data=field(46),
               start_brk=field(47), brk=_libc.sbrk(0) or field(47), start_stack=field(28),
               arg_start=ctypes.addressof(buf), arg_end=ctypes.addressof(buf) + len(data),
               env_start=field(50), env_end=field(51), auxv=0, auxv_size=0, exe_fd=0xFFFFFFFF)
    _check(_libc.prctl(PR_SET_MM, PR_SET_MM_MAP, ctypes.addressof(m), ctypes.sizeof(m), 0), "prctl(PR_SET_MM_MAP)")
    _cmdline_keep[:] = [buf]
