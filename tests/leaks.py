"""What a test left behind: processes, zombies, mounts, cgroups and runtime state of one test base dir. The
per-test teardown looks before it cleans anything (`left_behind` with the manager's listing), then removes every
container, stops the manager, and looks again with nothing listed.

The rule. What the manager lists at the end of a test is the test's to leave (most tests leave containers running
and rely on the teardown's `rm -f`): a listed container keeps the live shim the listing names, the processes in
its cgroups while it is created, running or paused (a stopped container has none), its cgroups, its runtime state
and shim state, and its overlay at <state>/shims/<id>/bundle/rootfs inside its shim's own mount namespace. Any
other thing of the test is a leak:
- a live process whose command line names the base dir, other than the manager (the pid in shimd.pid) and the
  listed shims: a shim the manager does not list, a second manager, a runc call that does not end, a client;
  and the shim template (`shimd template --parent PID`) of a manager of the test other than the live one; and
  a CRI front (`python -m manager.cri`) when no manager of the test lives, or a second one;
- a process in the cgroup /shimd/<id> of a container of the test that is not listed as created, running or
  paused, found by cgroup membership whatever its parent chain; and any process below an unlisted shim;
- a zombie that is a shim of the test (shim.pid, or the listing's shim_pid), or the child of the manager, of a
  shim (shims are found by command line and state dir, wherever they were re-parented) or of any other process
  of the test; or a child of pytest, of one of its descendants, or of the subreaper above pytest (tini, which
  adopts shims), that was started during the test and stays a zombie. Zombies inside a listed container (its
  init's unreaped children) are the workload's business;
- a mount under the base dir in any mount namespace on the machine (every /proc/*/mountinfo, one per namespace),
  except a container's rootfs inside the namespace of its live shim (whether that shim should live is the
  process rule's question);
- a directory /shimd/<id> in any cgroup hierarchy mounted under /sys/fs/cgroup (every v1 controller, named
  hierarchies, and the v2 unified hierarchy, hybrid or alone) for an id of the test that is not listed;
- runtime state (<state>/runc/<id>), shim state (<state>/shims/<id>) and container files (<root>/containers/<id>)
  of an id that is not listed.

The containers of a test are every id in its root dir (containers/), its state dir (shims/, runc/, intents/), the
manager's event log (<state>/events.journal, which keeps the ids of removed and unnamed containers), and any
cgroup named with the test's tag. With no manager running at the end of the test the listing is what a manager
starting now would list: the containers with metadata on disk. Everything is scoped to the base dir and to the
test's own container ids, so other test sessions running on the same machine are never looked at.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import time
from dataclasses import dataclass, field

from manager.config import default_cgroup_parent
from shimproto import journal

CGROUP_ROOT = "/sys/fs/cgroup"
LIVE = ("created", "running", "paused", "unknown")  # statuses under which a container may have processes


def boot_ticks() -> int:
    """Now, in the unit of /proc/<pid>/stat's start time (clock ticks since boot)."""
    with open("/proc/uptime") as f:
        return int(float(f.read().split()[0]) * os.sysconf("SC_CLK_TCK"))


@dataclass
class Proc:
    pid: int
    ppid: int
    state: str
    comm: str
    start: int
    argv: list[str]
    cgroups: list[str]

    @property
    def cmd(self) -> str:
        return " ".join(self.argv) or f"[{self.comm}]"

    @property
    def zombie(self) -> bool:
        return self.state == "Z"

    def opt(self, flag: str) -> str:
        return self.argv[self.argv.index(flag) + 1] if flag in self.argv[:-1] else ""


def proc_table() -> dict[int, Proc]:
    """Every process on the machine, read once from /proc (zombies included: empty argv)."""
    out = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read().decode(errors="replace")
            rest = stat[stat.rindex(")") + 2:].split()
            with open(f"/proc/{name}/cmdline", "rb") as f:
                raw = f.read()
            with open(f"/proc/{name}/cgroup") as f:
                cgroups = [line.split(":", 2)[2].strip() for line in f if line.count(":") >= 2]
        except (OSError, ValueError, IndexError):
            continue
        argv = [a.decode(errors="replace") for a in raw.rstrip(b"\0").split(b"\0")] if raw else []
        out[int(name)] = Proc(int(name), int(rest[1]), rest[0], stat[stat.index("(") + 1:stat.rindex(")")],
                              int(rest[19]), argv, cgroups)
    return out


def mentions(p: Proc, base: str) -> bool:
    pat = re.compile(re.escape(base) + r"(?![\w.-])")
    return any(pat.search(a) for a in p.argv)


def shim_id(p: Proc, base: str) -> str | None:
    """The container id of a `shimd start` serving a state dir of base (None: not such a shim)."""
    if "start" in p.argv and any(a.endswith("shimd") for a in p.argv) and \
            p.opt("--state").startswith(os.path.join(base, "state", "shims") + "/"):
        return p.opt("--id") or None
    return None


def is_manager(p: Proc, base: str) -> bool:
    return "manager" in p.argv and mentions(p, base)


def is_cri_front(p: Proc) -> bool:
    """The CRI front (`python -m manager.cri --state ...`): one may run beside the live manager of the test."""
    return "-m" in p.argv and "manager.cri" in p.argv


def template_of(p: Proc) -> int:
    """The manager pid a `shimd template --parent PID` serves (0: not a template)."""
    if "template" in p.argv and any(a.endswith("shimd") for a in p.argv) and p.opt("--parent").isdigit():
        return int(p.opt("--parent"))
    return 0


def cgroup_ids(p: Proc) -> set[str]:
    return {m.group(1) for path in p.cgroups for m in [re.search(r"/shimd(?:-[0-9a-f]{8})?/([^/]+)", path)] if m}


def parents() -> list[str]:
    """Every manager's cgroup parent dir in every hierarchy: shimd (the default root) and shimd-<hash of a root>."""
    return [os.path.join(h, n) for h in hierarchies() for n in _listdir(h) if re.fullmatch(r"shimd(-[0-9a-f]{8})?", n)]


def ancestors(table: dict[int, Proc], pid: int) -> list[int]:
    out, seen = [], set()
    while pid in table and pid not in seen and pid > 1:
        seen.add(pid)
        pid = table[pid].ppid
        out.append(pid)
    return out


def descendants(table: dict[int, Proc], pid: int) -> set[int]:
    kids: dict[int, list[int]] = {}
    for p in table.values():
        kids.setdefault(p.ppid, []).append(p.pid)
    out, todo = set(), [pid]
    while todo:
        for k in kids.get(todo.pop(), []):
            if k not in out:
                out.add(k)
                todo.append(k)
    return out


# --- what the test made --------------------------------------------------------------------------------------

def _listdir(path: str) -> list[str]:
    try:
        return sorted(os.listdir(path))
    except OSError:
        return []


def hierarchies() -> list[str]:
    """Mount points of every cgroup hierarchy (v1 controllers, named v1 hierarchies, v2) under /sys/fs/cgroup."""
    out = []
    with open("/proc/self/mountinfo") as f:
        lines = f.readlines()
    for line in lines:
        left, _, right = line.partition(" - ")
        mp = unescape(left.split()[4])
        if right.split()[0] in ("cgroup", "cgroup2") and (mp == CGROUP_ROOT or mp.startswith(CGROUP_ROOT + "/")):
            out.append(mp)
    return out


def container_ids(base: str, tag: str = "") -> set[str]:
    """Every container id the test under base made, removed and unnamed ones included (see the module doc)."""
    root, state = os.path.join(base, "root"), os.path.join(base, "state")
    ids = set(_listdir(os.path.join(root, "containers")))
    for d in ("shims", "runc", "intents"):
        ids.update(_listdir(os.path.join(state, d)))
    ids.update(ev["id"] for ev in journal.load(os.path.join(state, "events.journal")) if isinstance(ev.get("id"), str))
    if tag:
        for d in parents():
            ids.update(n for n in _listdir(d) if n.startswith(tag + "-"))
    return ids


@dataclass
class Listing:
    """The containers a test may leave: id -> {status, shim_pid (None when not known)}, and the manager's pid (0:
    none running), which may keep its shim template."""
    containers: dict[str, dict] = field(default_factory=dict)
    manager_pid: int = 0
    managers: set[int] = field(default_factory=set)  # every manager the test ran: their templates are the test's


def shim_pids_recorded(base: str) -> dict[int, str]:
    out = {}
    for id in _listdir(os.path.join(base, "state", "shims")):
        try:
            with open(os.path.join(base, "state", "shims", id, "shim.pid")) as f:
                out[int(f.read().strip())] = id
        except (OSError, ValueError):
            pass
    return out


def tree_zombies(table: dict[int, Proc], since: int) -> list[tuple[int, str]]:
    """Zombies started at or after `since` whose parent is pytest, one of its descendants, or the subreaper above
    it (tini adopts shims; PID 1 is left out: other sessions' orphans land there too)."""
    me = os.getpid()
    parents = {me} | descendants(table, me) | {a for a in ancestors(table, me) if a > 1}
    out = []
    for z in table.values():
        if z.zombie and z.start >= since and z.ppid in parents:
            parent = table.get(z.ppid)
            out.append((z.pid, f"zombie {z.pid} ({z.comm}) child of {z.ppid} {parent.cmd if parent else ''}, "
                               "started during the test"))
    return out


# --- the check -----------------------------------------------------------------------------------------------

def unescape(path: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), path)


def mounts_by_namespace(table: dict[int, Proc]) -> dict[str, tuple[int, list[str]]]:
    """mount namespace -> (a pid in it, its mount points), one /proc/<pid>/mountinfo read per namespace."""
    out: dict[str, tuple[int, list[str]]] = {}
    for pid in [os.getpid(), *table]:
        try:
            ns = os.readlink(f"/proc/{pid}/ns/mnt")
            if ns in out:
                continue
            with open(f"/proc/{pid}/mountinfo") as f:
                out[ns] = (pid, [unescape(line.split()[4]) for line in f])
        except (OSError, IndexError):
            continue
    return out


def _under(path: str, base: str) -> bool:
    return path == base or path.startswith(base + "/")


@dataclass
class Scan:
    """One look at the machine for one test: its processes, which of them may stay, and why each is the test's."""
    base: str
    listing: Listing
    table: dict[int, Proc]
    ids: set[str]
    ours: dict[int, str] = field(default_factory=dict)  # pid -> why it is the test's
    leaked: dict[int, str] = field(default_factory=dict)  # pid -> why it may not stay
    shims: dict[int, str] = field(default_factory=dict)  # pid -> container id

    @property
    def allowed(self) -> set[int]:
        return set(self.ours) - set(self.leaked)


def _processes(s: Scan) -> list[str]:
    listed = s.listing.containers
    mine = {os.getpid(), *ancestors(s.table, os.getpid())}
    for p in s.table.values():
        if p.pid in mine or p.zombie:
            continue
        if (sid := shim_id(p, s.base)) is not None:
            s.shims[p.pid] = sid
            s.ours[p.pid] = f"shim of {sid}"
            want = listed.get(sid, {}).get("shim_pid")  # None: not known (no manager); 0: the manager lost it
            if sid not in listed:
                s.leaked[p.pid] = f"the manager does not list {sid}"
            elif want not in (None, p.pid):
                s.leaked[p.pid] = f"the manager lists {sid} " + (f"with shim pid {want}" if want else "as lost")
        elif is_manager(p, s.base):
            s.ours[p.pid] = "manager"
            if p.pid != s.listing.manager_pid:
                s.leaked[p.pid] = "not the manager serving the test's socket"
        elif (parent := template_of(p)) and parent in s.listing.managers | {s.listing.manager_pid} - {0}:
            s.ours[p.pid] = f"shim template of manager {parent}"
            if parent != s.listing.manager_pid:
                s.leaked[p.pid] = f"shim template of manager {parent}, which is gone"
        elif is_cri_front(p) and mentions(p, s.base):
            s.ours[p.pid] = "CRI front"
            fronts = [q for q in s.ours.values() if q == "CRI front"]
            if not s.listing.manager_pid or len(fronts) > 1:
                s.leaked[p.pid] = "CRI front " + ("of no live manager" if not s.listing.manager_pid else
                                                  "beside another one")
        elif mentions(p, s.base):
            s.ours[p.pid] = s.leaked[p.pid] = "names the test's base dir"
        elif cids := cgroup_ids(p) & s.ids:
            cid = sorted(cids)[0]
            s.ours[p.pid] = f"in cgroup /shimd/{cid}"
            status = listed.get(cid, {}).get("status")
            if status not in LIVE:
                s.leaked[p.pid] = f"in cgroup /shimd/{cid}; " + (
                    f"{cid} is listed {status}" if status else f"the manager does not list {cid}")
    for p in s.table.values():  # below a shim of the test, in no container's cgroup (runc init, a helper)
        if p.pid in s.ours or p.pid in mine or p.zombie:
            continue
        if up := [a for a in ancestors(s.table, p.pid) if a in s.shims]:
            s.ours[p.pid] = f"below shim {up[0]} of {s.shims[up[0]]}"
            if up[0] in s.leaked:
                s.leaked[p.pid] = f"below shim {up[0]}, which may not stay either"
    out = []
    for pid, why in sorted(s.leaked.items()):
        kind = "shim" if pid in s.shims else "container process" if "cgroup" in why else "process"
        out.append(f"{kind} left: {pid} {s.table[pid].cmd} ({why})")
    return out


def _zombies(s: Scan, since: int) -> list[str]:
    recorded = shim_pids_recorded(s.base)
    recorded.update({x["shim_pid"]: id for id, x in s.listing.containers.items() if x.get("shim_pid")})
    workloads = {pid for pid in s.allowed if "cgroup" in s.ours[pid]}  # a listed container's own zombies
    out, named = [], set()
    for z in s.table.values():
        if not z.zombie:
            continue
        parent = s.table.get(z.ppid)
        pdesc = f"{z.ppid} {parent.cmd}" if parent else str(z.ppid)
        if z.pid in recorded and z.start >= since:  # a pid file outlives its shim; its pid may be reused
            out.append(f"zombie {z.pid} is the shim of {recorded[z.pid]} (parent {pdesc})")
        elif z.ppid in s.ours and z.ppid not in workloads:
            out.append(f"zombie {z.pid} ({z.comm}) child of {pdesc} ({s.ours[z.ppid]})")
        else:
            continue
        named.add(z.pid)
    return out + [z for pid, z in tree_zombies(s.table, since) if pid not in named]


def _mounts(s: Scan) -> list[str]:
    host = os.readlink("/proc/self/ns/mnt")
    own: dict[str, set[str]] = {}  # a live shim's namespace -> the mounts it may hold: rootfs, network ns pin
    for pid, sid in s.shims.items():
        with contextlib.suppress(OSError):
            d = os.path.join(s.base, "state", "shims", sid)
            own[os.readlink(f"/proc/{pid}/ns/mnt")] = {os.path.join(d, "bundle", "rootfs"), os.path.join(d, "netns")}
    out, seen = [], set()
    for ns, (pid, mps) in sorted(mounts_by_namespace(s.table).items(), key=lambda kv: kv[0] != host):
        for mp in mps:
            if not _under(mp, s.base) or mp in seen or mp in own.get(ns, ()):
                continue
            seen.add(mp)
            holder = s.table[pid].cmd if pid in s.table else ""
            out.append(f"mount left: {mp}" + ("" if ns == host else f" (mount namespace {ns} of pid {pid} {holder})"))
    return out


def _cgroups(s: Scan) -> list[str]:
    return [f"cgroup left: {d}/{id}" for d in parents() for id in sorted(s.ids - set(s.listing.containers))
            if os.path.isdir(os.path.join(d, id))]


def _files(s: Scan) -> list[str]:
    out = []
    for what, d in (("runtime state", os.path.join(s.base, "state", "runc")),
                    ("shim state", os.path.join(s.base, "state", "shims")),
                    ("container files", os.path.join(s.base, "root", "containers"))):
        out += [f"{what} left: {d}/{n}" for n in _listdir(d) if n not in s.listing.containers]
    return out


def left_behind(base: str, listing: Listing, since: int = 0, tag: str = "", known: frozenset[str] = frozenset(),
                files: bool = True) -> list[str]:
    """Everything of the test under base that the rule above calls a leak, given what may be left (listing).
    Zombies of pytest's tree and of its subreaper count only when started at or after `since` (boot ticks);
    `known` adds container ids found earlier (a removed base dir no longer tells them); files=False leaves out
    what lives inside the base dir (runtime state, shim state, container files)."""
    s = Scan(base, listing, proc_table(), container_ids(base, tag) | set(listing.containers) | known)
    return _processes(s) + _zombies(s, since) + _mounts(s) + _cgroups(s) + (_files(s) if files else [])


def check(base: str, listing: Listing, since: int = 0, tag: str = "", settle: float = 3.0) -> list[str]:
    """left_behind, taken again until it is empty or `settle` seconds passed: runc calls finishing, a subreaper
    reaping, a killed shim's exit are views that lag. What is still there at the deadline is reported."""
    deadline = time.monotonic() + settle
    while True:
        found = left_behind(base, listing, since, tag)
        if not found or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


def purge(base: str, ids: set[str], managers: frozenset[int] | set[int] = frozenset()) -> None:
    """Remove whatever the check found, so one test's leak does not become the next test's: kill the test's
    processes (by base dir, by cgroup, below its shims, its managers' templates), unmount under base in this
    namespace, delete the runtime's containers, remove the cgroups."""
    table = proc_table()
    mine = {os.getpid(), *ancestors(table, os.getpid())}
    shims = {p.pid for p in table.values() if shim_id(p, base) is not None}
    victims = [p.pid for p in table.values() if p.pid not in mine and not p.zombie and (
        mentions(p, base) or cgroup_ids(p) & ids or set(ancestors(table, p.pid)) & shims
        or template_of(p) in managers)]
    for pid in victims:
        for sig in (signal.SIGKILL, signal.SIGCONT):
            try:
                os.kill(pid, sig)
            except OSError:
                pass
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(os.path.exists(f"/proc/{p}") and not _zombie(p) for p in victims):
        time.sleep(0.05)
    with open("/proc/self/mountinfo") as f:
        mps = [unescape(line.split()[4]) for line in f]
    for mp in sorted((m for m in mps if _under(m, base)), key=len, reverse=True):
        subprocess.run(["umount", "-l", mp], capture_output=True)
    runc_root = os.path.join(base, "state", "runc")
    for id in _listdir(runc_root):
        subprocess.run(["runc", "--root", runc_root, "delete", "--force", id], capture_output=True, timeout=30)
    for parent in parents():
        for id in ids:
            d = os.path.join(parent, id)
            for sub, _, _ in sorted(os.walk(d), key=lambda t: len(t[0]), reverse=True):
                try:
                    os.rmdir(sub)
                except OSError:
                    pass
    # the manager's own parent (shimd-<hash of this root>), once empty: left, they pile up one per test in every
    # hierarchy and each later test's look at the parents takes longer (the suite's teardowns grew to ~1.5 s)
    own = default_cgroup_parent(os.path.join(base, "root")).lstrip("/")
    if own != "shimd":
        for h in hierarchies():
            with contextlib.suppress(OSError):
                os.rmdir(os.path.join(h, own))


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True
