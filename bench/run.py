"""Side-by-side benchmark of issue 10: runc alone (the floor), shimd, and Debian's containerd 1.6 with
containerd-shim-runc-v2, in one run, the systems alternating, medians and ratios, written to docs/benchmarks.md.

Figures (goals of issue 10): 1 memory per shim with N running (USS, PSS, threads, daemon RSS); 2 start
(`run -d`, `run --rm true`, and create+start through the API from a connected client against runc create+start);
3 restore (daemon SIGKILL + start until all are listed running, at N for both, at the scale count for shimd);
4 exit latency (`kill -9` of an init to its exit event at a connected `events` subscriber); 5 logs (bench/logs.py,
someone else's, included when present); 6 scale (500 running: listing, `ps` time, memory, restore).
All three run the same busybox tree: runc from a bundle whose root is that tree (read-only), containerd with
`ctr run --rootfs` on it (no snapshot), shimd with its built-in image (an overlay per container, as always).
All three apply a default seccomp filter (shimd's, the same in the runc bundle, `ctr run --seccomp`).

Usage, as root (`make bench` sets things up and runs this under `tini -s` so that exited shims are reaped):
    .venv/bin/python bench/run.py [-n 20] [--containers 50] [--scale 500] [--out docs/benchmarks.md]
Environment: BENCH_QUICK=1 (3 iterations, 5 containers, no scale part, logs.py small, written to
/tmp/shimd-bench-quick.md unless --out: for checking that it works, its numbers are not results);
BENCH_N, BENCH_CONTAINERS, BENCH_SCALE (0 skips the scale part), BENCH_RESTORES, BENCH_OUT, BENCH_LOGS=0 (skip
bench/logs.py), BENCH_LOGS_ARGS (its arguments), BENCH_LOGS_TIMEOUT (seconds, default 3600), BENCH_CRI (pods of
each kind, host network and CNI, per runtime for the CRI part, bench/cri.py; 0 skips it), BENCH_ONLY=cri (only the
CRI part: its section replaces the one in --out, the rest of that file kept).
"""

from __future__ import annotations

import argparse
import glob
import os
import platform
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import cri
import crireport
import figures
import images
import psutil
import report
from containerd import Containerd
from systems import Runc, Shimd, _kill_and_wait
from util import PY, REPO, run, say

PROJECT_PACKAGES = ["shimproto", "runtime", "shimd", "manager", "shimctl"]
LOGS_BENCH = os.path.join(REPO, "bench", "logs.py")


def _env_int(name: str, default: int) -> int:
    v = os.environ.get(name, "")
    return int(v) if v.strip() else default


def options() -> argparse.Namespace:
    quick = os.environ.get("BENCH_QUICK", "") not in ("", "0")
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=_env_int("BENCH_N", 3 if quick else 20),
                    help="iterations per latency figure")
    ap.add_argument("--containers", type=int, default=_env_int("BENCH_CONTAINERS", 5 if quick else 50),
                    help="running containers per system for the memory and restore figures")
    ap.add_argument("--scale", type=int, default=_env_int("BENCH_SCALE", 0 if quick else 500),
                    help="containers running at once on shimd for the scale figures (0: skip)")
    ap.add_argument("--images", type=int, default=_env_int("BENCH_IMAGES", 1 if quick else 5),
                    help="pulls per system for the image figures (0: skip them)")
    ap.add_argument("--cri", type=int, default=_env_int("BENCH_CRI", 3 if quick else 10),
                    help="pods of each kind per runtime for the CRI figures (0: skip them)")
    ap.add_argument("--restores", type=int, default=_env_int("BENCH_RESTORES", 2 if quick else 5),
                    help="daemon restarts per restore figure")
    ap.add_argument("--out", default=os.environ.get("BENCH_OUT") or (
        os.path.join(tempfile.gettempdir(), "shimd-bench-quick.md") if quick
        else os.path.join(REPO, "docs", "benchmarks.md")))
    a = ap.parse_args()
    a.quick = quick
    a.only = os.environ.get("BENCH_ONLY", "")
    if a.only not in ("", "cri"):
        ap.error(f"BENCH_ONLY={a.only}: only 'cri' is known")
    a.settle = 1.0 if quick else 3.0
    a.exits = _env_int("BENCH_EXITS", a.n if quick else max(10, a.n))  # a full run takes >= 10 samples
    a.scale_restores = min(a.restores, 3)
    a.ps_iters = 3 if quick else 7
    return a


def compile_bytecode() -> None:
    """A real install has compiled bytecode; these machines set PYTHONDONTWRITEBYTECODE=1, so without this every
    Python process of shimd would compile its modules at start. Dependencies are compiled by pip already; checked."""
    run([PY, "-m", "compileall", "-q", *PROJECT_PACKAGES], timeout=300)
    purelib = subprocess.run([PY, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    run([PY, "-m", "compileall", "-q", purelib], check=False, timeout=600)


def machine() -> dict[str, str]:
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    head = subprocess.run(["git", "-C", REPO, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run(["git", "-C", REPO, "status", "--porcelain", "--untracked-files=no", "--",
                            *PROJECT_PACKAGES], capture_output=True, text=True).stdout.split("\n")
    return {
        "cpu": cpu, "cpus": str(os.cpu_count()), "mem": f"{psutil.virtual_memory().total / 2**30:.0f} GiB",
        "kernel": platform.release(), "python": platform.python_version(),
        "runc": _version(["runc", "--version"], 2), "containerd": _version(["containerd", "--version"], 2),
        "commit": head.stdout.strip() or "?",
        "dirty": ", ".join(ln[3:] for ln in dirty if ln.strip()),
        "pydontwrite": os.environ.get("PYTHONDONTWRITEBYTECODE", ""),
    }


def _version(cmd: list[str], word: int) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True).stdout.split()[word]
    except (OSError, IndexError):
        return "?"


def logs_table(a: argparse.Namespace) -> str:
    """HOOK for goal 5: bench/logs.py (written by someone else) measures the log path on its own and prints a
    markdown table; it runs after the other systems are gone, and its table goes into the doc verbatim."""
    if os.environ.get("BENCH_LOGS", "1") == "0":
        return "_Skipped (BENCH_LOGS=0)._"
    if not os.path.exists(LOGS_BENCH):
        return "_bench/logs.py is not there yet: no log figures in this run (bench/run.py runs it when present)._"
    args = shlex.split(os.environ.get("BENCH_LOGS_ARGS", "-n 1 --mb 20 --mb10 5" if a.quick else ""))
    say(f"logs: {' '.join(['bench/logs.py', *args])}")
    t0 = time.monotonic()
    try:
        p = subprocess.run([PY, LOGS_BENCH, *args], cwd=REPO, stdin=subprocess.DEVNULL, capture_output=True,
                           text=True, timeout=_env_int("BENCH_LOGS_TIMEOUT", 3600))
    except subprocess.TimeoutExpired:
        return "_bench/logs.py did not finish within BENCH_LOGS_TIMEOUT: no log figures._"
    took = time.monotonic() - t0
    if p.returncode != 0:
        tail = "\n".join((p.stderr or "").strip().splitlines()[-5:])
        return f"_bench/logs.py failed (exit {p.returncode}); last lines of its stderr:_\n\n```\n{tail}\n```"
    return (p.stdout.strip() + f"\n\n_From `bench/logs.py {' '.join(args)}` (its own run, {took:.0f} s, after the "
            "figures above; see its docstring for the method)._")


# --- cleanup: whatever a failure left, by the run's own names only -----------------------------------------------

def _leftover_procs(base: str, prefix: str) -> list[psutil.Process]:
    out = []
    me = os.getpid()
    for p in psutil.process_iter(["cmdline"]):
        if p.pid == me:
            continue
        try:
            cmd = " ".join(p.info["cmdline"] or [])
            with open(f"/proc/{p.pid}/cgroup") as f:
                cg = f.read()
        except (OSError, psutil.Error):
            continue
        if base in cmd or f"/{prefix}-" in cg or f"/{prefix}/" in cg:
            out.append(p)
    return out


def _leftover_cgroups(prefix: str) -> list[str]:
    pats = [f"/sys/fs/cgroup/{pat}" for pat in (f"*/{prefix}-*", f"*/shimd*/{prefix}-*", f"*/{prefix}", f"*/{prefix}/*",
                                                  f"*/*/{prefix}-*", f"{prefix}-*", f"shimd/{prefix}-*", prefix,
                                                  f"{prefix}/*")]
    return sorted({d for pat in pats for d in glob.glob(pat) if os.path.isdir(d)}, key=len, reverse=True)


def _leftover_mounts(base: str) -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return [ln.split()[4] for ln in f if base in ln.split()[4]]


def leftovers(base: str, prefix: str) -> list[str]:
    return ([f"process {p.pid} {' '.join(p.cmdline())}" for p in _leftover_procs(base, prefix)]
            + [f"cgroup {d}" for d in _leftover_cgroups(prefix)] + [f"mount {m}" for m in _leftover_mounts(base)])


def sweep(base: str, prefix: str) -> None:
    _kill_and_wait(_leftover_procs(base, prefix), "process")
    for d in _leftover_cgroups(prefix):
        try:
            os.rmdir(d)
        except OSError as e:
            say(f"cleanup: rmdir {d}: {e}")
    for m in sorted(_leftover_mounts(base), key=len, reverse=True):
        subprocess.run(["umount", "-l", m], capture_output=True)


# --- the run ---------------------------------------------------------------------------------------------------

def _stop(signum: int, _frame) -> None:
    raise SystemExit(128 + signum)  # cleanup runs in the finally blocks


def cleanup_systems(systems: list) -> None:
    while systems:
        s = systems.pop()
        try:
            s.cleanup()
        except Exception as e:  # noqa: BLE001 - the other systems must still be cleaned
            say(f"cleanup of {s.name}: {e}")


def measure_cri(a: argparse.Namespace, base: str, prefix: str, started: float, out: dict) -> None:
    """The CRI part alone, after the other systems are gone; a failure is reported in its section."""
    cleanup_systems(out["systems"])
    t0 = time.monotonic()
    try:
        out["cri"] = cri.measure(base, prefix, started, a.cri, out["systems"])
    except Exception as e:  # noqa: BLE001 - the other figures still get written
        say(f"cri: FAILED: {e}")
        out["cri"] = {"error": " ".join(str(e).split())[:1500]}
    out.setdefault("took", {})["cri"] = time.monotonic() - t0


def measure(a: argparse.Namespace, base: str, prefix: str, started: float, out: dict) -> None:
    shimd = Shimd(base, started)
    out["systems"] = [shimd]
    say("starting shimd")
    shimd.start_daemon()
    shimd.wait_serving()
    shimd.run_true(f"{prefix}-warm")  # builds the busybox image
    rootfs = os.path.join(shimd.root, "images", "busybox", "rootfs")
    ctd = Containerd(base, rootfs, prefix, started)
    out["systems"].append(ctd)
    say("starting containerd")
    ctd.start_daemon()
    ctd.wait_serving()
    ctd.run_true(f"{prefix}-warm")
    runc = Runc(base, rootfs)
    out["systems"].append(runc)
    systems = [runc, shimd, ctd]
    for kind in ("detached", "true"):
        say(f"start: {kind}, {a.n} iterations")
        t0 = time.monotonic()
        out.setdefault("lat", {})[kind] = figures.cli_latency(systems, a.n, kind, prefix)
        out.setdefault("took", {})[kind] = time.monotonic() - t0
    say(f"start: API create+start, {a.n} iterations")
    out["api"] = figures.api_start(shimd, runc, a.n, prefix)
    say(f"exit latency: {a.exits} kills each")
    out["exits"] = figures.exit_latency([shimd, ctd], a.exits, prefix)
    if a.images:
        t0 = time.monotonic()
        out["images"] = images.measure(shimd, ctd, base, prefix, a.images)
        out["took"]["images"] = time.monotonic() - t0
    t0 = time.monotonic()
    out["mem"] = figures.memory_and_restore([shimd, ctd], a.containers, a.restores, prefix, a.settle)
    out["took"]["mem"] = time.monotonic() - t0
    if a.scale:
        t0 = time.monotonic()
        out["scale"] = figures.scale(shimd, a.scale, a.scale_restores, a.ps_iters, prefix, a.settle)
        out["took"]["scale"] = time.monotonic() - t0
        say(f"scale: took {out['took']['scale']:.0f}s")


def _merge_note(ksm: dict | None) -> list[str]:
    if not ksm:
        return ["ksmd was not running (memory_merge = false, or no KSM): no memory was merged.", ""]
    return [f"Memory merging (`memory_merge`, on by default): the manager had started ksmd, which merged at the "
            f"host's pace ({ksm['pages_to_scan']} pages every {ksm['sleep_ms']} ms, the kernel's defaults unless "
            "the host changed them); the merged figures were taken after "
            f"{ksm['scans']} more full scans, {ksm['waited']:.0f} s after the first, during which ksmd used "
            f"{ksm['cpu']:.1f} s of CPU. containerd's shims do not offer their memory to ksmd; theirs is measured "
            "at the same moments.", ""]


def render(a: argparse.Namespace, m: dict, out: dict, logs: str, began: str, took: float, load: tuple) -> str:
    lines = ["# Benchmarks", ""]
    if a.quick:
        lines += ["**QUICK MODE (BENCH_QUICK=1): a check that the benchmark works. These numbers are not results.**",
                  ""]
    lines += [
        f"Written by `make bench` (bench/run.py), started {began} UTC, took {took / 60:.1f} min. Machine: "
        f"{m['cpus']} CPUs ({m['cpu']}), {m['mem']} memory, Linux {m['kernel']}, Python {m['python']}, "
        f"runc {m['runc']}, containerd {m['containerd']}. shimd at commit {m['commit']}"
        + (f" with uncommitted changes in {m['dirty']}" if m["dirty"] else "") + ".",
        "",
        f"**One run on a shared, noisy machine** (load average {load[0]:.2f} at the start, {load[1]:.2f} at the "
        "end; other people's work runs beside it): only the ratios within this run mean much. Every figure is a "
        f"median: {a.n} iterations per latency figure (the systems alternating within each iteration, the order "
        f"rotating), {a.exits} kills for the exit latency, {a.containers} running containers per system for the "
        f"memory figures and {a.restores} daemon restarts (alternating) for the restore figure"
        + (f"; the scale part ran {a.scale} containers on shimd, with {a.ps_iters} `ps` calls and "
           f"{a.scale_restores} restores" if a.scale else "; the scale part was skipped") + ".",
        "",
        "Bytecode: the benchmark first compiles the project with `python -m compileall` (and checks the venv's "
        "packages) because these machines set `PYTHONDONTWRITEBYTECODE=1`"
        + (f" (set here: `{m['pydontwrite']}`)" if m["pydontwrite"] else "")
        + ", under which every Python process would otherwise compile shimd's modules at each start; a real "
        "install has compiled bytecode.",
        "",
        "A ratio below 1 means shimd is faster or smaller. `-`: not applicable to that system.",
        "",
        "## Start and exit (goals 2 and 4)",
        "",
        *report.table(report.latency_rows(out["lat"], out["api"], out["exits"])),
        "",
        "The CLI is part of every CLI figure (`shimctl` is a Python process; `ctr` and `runc` are Go binaries). "
        "shimd mounts an overlay per container; `ctr run --rootfs` and the runc bundle use the tree as it is. All "
        "three apply a default seccomp filter, which runc compiles at each create (about a third of its create "
        "time here): shimd's own, the same filter in the runc bundle, containerd's default profile (`ctr run "
        "--seccomp`; without that flag ctr applies none). The "
        "exit latency is measured from just before `kill(2)` to the moment the subscriber's line is read from its "
        "stdout (`shimctl events --format json`; `ctr events`), each started before the container and shown "
        "connected by the container's start event.",
        "",
        *report.spread(out["lat"], out["api"], out["exits"]),
        "",
        f"## Memory and restore with {a.containers} running containers each (goals 1 and 3)",
        "",
        *report.table(report.memory_rows(out["mem"], a.containers)),
        "",
        f"Monitors counted: shimd {out['mem']['shimd']['monitors']}, containerd "
        f"{out['mem']['containerd']['monitors']}; both systems had their containers running at the same time. "
        "The restore figure starts its clock at the SIGKILL and polls only once the new daemon has bound its "
        "socket again (a client connecting to the stale socket would retry on its own timer: ZeroMQ's is 100 ms), "
        "then as fast as answers come: shimd's `list` through the API from a client made then, containerd with "
        "`ctr task ls` (a Go binary of a few ms, part of its figure). The manager's other processes are its "
        "children that are not shims: the warm template, whose pages are shared with the shims forked from it "
        "(which is why PSS is reported), and the CRI front (`python -m manager.cri`, on by default; containerd's "
        "CRI plugin is inside its daemon, so its memory is in containerd's daemon RSS).",
        "",
        *_merge_note(out["mem"]["shimd"].get("ksm")),
    ]
    lines += images.section(out.get("images"), out["took"].get("images", 0))
    if "scale" in out:
        sc = out["scale"]
        lines += [f"## Scale: {sc['count']} containers running at once on shimd (goals 3 and 6)", "",
                  *report.table(report.scale_rows(sc)), "",
                  f"The scale part took {out['took']['scale']:.0f} s (skip it with BENCH_SCALE=0).", ""]
    else:
        lines += ["## Scale (goal 6)", "", "_Skipped in this run (BENCH_SCALE=0 or quick mode)._", ""]
    lines += crireport.section(out.get("cri"), out["took"].get("cri", 0))
    lines += ["## Logs (goal 5)", "", logs, ""]
    return "\n".join(lines)


def main() -> int:
    a = options()
    if os.geteuid() != 0:
        print("bench: run as root", file=sys.stderr)
        return 2
    for tool in ("runc", "containerd", "ctr", "containerd-shim-runc-v2"):
        if not shutil.which(tool):
            print(f"bench: {tool} is not installed (apt-get install containerd runc)", file=sys.stderr)
            return 2
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, _stop)
    began, t_start, started = time.strftime("%Y-%m-%d %H:%M", time.gmtime()), time.monotonic(), time.time()
    load0 = os.getloadavg()[0]
    say("compiling bytecode")
    compile_bytecode()
    m = machine()
    prefix = "bn" + secrets.token_hex(3)  # in every id, cgroup and namespace of this run
    base = tempfile.mkdtemp(prefix="shimd-bench-")
    say(f"base {base}, ids {prefix}-*{' (QUICK MODE: numbers are not results)' if a.quick else ''}")
    out: dict = {"systems": []}
    ok = False
    ksm_run = figures.ksm_setting()  # the manager starts ksmd (memory_merge): put the host's setting back after
    try:
        if not a.only:
            measure(a, base, prefix, started, out)
        if a.cri:
            measure_cri(a, base, prefix, started, out)
        ok = "error" not in out.get("cri", {}) or not a.only
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):  # a second signal must not cut the cleanup short
            signal.signal(sig, signal.SIG_IGN)
        say("cleaning up")
        cleanup_systems(out["systems"])
        sweep(base, prefix)
        figures.ksm_setting(ksm_run)
        left = leftovers(base, prefix)
        for x in left:
            say(f"cleanup: LEFT BEHIND: {x}")
        if not left:
            say("cleanup: nothing left behind (processes, cgroups, mounts of this run)")
        shutil.rmtree(base, ignore_errors=True)
    if not ok:
        return 1
    if a.only:
        note = crireport.own_run_note(began, time.monotonic() - t_start, (load0, os.getloadavg()[0]), m["commit"])
        old = open(a.out).read() if os.path.exists(a.out) else "# Benchmarks\n"
        text = crireport.splice(old, crireport.section(out.get("cri"), out["took"].get("cri", 0), note))
    else:
        logs = logs_table(a)
        text = render(a, m, out, logs, began, time.monotonic() - t_start, (load0, os.getloadavg()[0]))
    with open(a.out, "w") as f:
        f.write(text)
    print(text)
    say(f"written to {a.out}")
    return 0 if not left else 1


if __name__ == "__main__":
    sys.exit(main())
