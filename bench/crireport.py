"""The CRI part's section of docs/benchmarks.md (bench/cri.py measures): a table of medians in bench/report.py's
rows, the spread of the samples, and what was done, from the run's own facts."""

from __future__ import annotations

import statistics

from report import Row, table
from util import median

STEPS = ("runp", "create", "start")


def _med(samples: list[dict[str, float]], step: str) -> float | None:
    return median([sum(x.values()) if step == "total" else x[step] for x in samples])


def section(res: dict | None, took: float, note: str = "") -> list[str]:
    """The CRI figures as a section of docs/benchmarks.md."""
    head = ["## CRI: a pod with one container through crictl", ""]
    if not res:
        return head + ["_Skipped in this run (BENCH_CRI=0)._", ""]
    if "error" in res:
        return head + [f"_The CRI part failed: {res['error']}_", ""]
    s, c = res["samples"]["shimd"], res["samples"]["containerd"]
    label = {"runp": "`crictl runp` (sandbox: the pause stand-in, host network)",
             "create": "`crictl create` (busybox `sleep`, image already pulled)",
             "start": "`crictl start`", "total": "runp + create + start, per pod"}
    rows = [Row(label[k], None, _med(s, k), _med(c, k), "ms", "reported" if k == "total" else "")
            for k in (*STEPS, "total")]
    spread = ["| samples (ms): min / p25 / median / p75 / max | shimd | containerd |", "|---|---|---|"]
    for k in (*STEPS, "total"):
        cells = []
        for xs in (s, c):
            v = sorted(sum(x.values()) if k == "total" else x[k] for x in xs)
            q = statistics.quantiles(v, n=4) if len(v) > 1 else [v[0]] * 3
            cells.append(" / ".join(f"{x * 1000:.1f}" for x in (v[0], q[0], q[1], q[2], v[-1])))
        spread.append(f"| {k} ({len(s)} each) | " + " | ".join(cells) + " |")
    text = (
        f"{res['n']} pods per runtime, the runtimes alternating (the order rotating), each step timed from spawn "
        "to exit of `crictl` (the same Go binary for both; its own start-up is in every figure); the total is the "
        "median of each pod's sum. Each pod was stopped and removed after its measurement (untimed), and one pod "
        "per runtime was made and removed before (warm-up, untimed). Same images for both, pulled before anything "
        "was timed: the CRI tests' stand-ins (tests/cri_images.py) served by a docker-registry on 127.0.0.1 "
        f"(`{res['images'][0]}` as both runtimes' sandbox image, a busybox running `sleep 100000` in the pod). "
        "shimd: its CRI front (`python -m manager.cri`) before a manager set up as for the figures above, images "
        "pulled with `shimctl pull`; containerd 1.6: its CRI plugin with runc.v2 and the overlayfs snapshotter, "
        "images pulled with `crictl pull`. **Host network for both pods** (namespace_options network NODE): "
        "shimd's CNI pods need the spec field `conflist`, which main's ContainerSpec does not have yet (it drops "
        "the key: a pod without host network gets the manager's default network and no IP), so pod networking "
        "through CNI (a bridge and host-local IPAM: each runtime's largest cost of a `runp`) is not in "
        "these figures. shimd's state directory was /run/shimd-<run id> rather than under the bench's temp dir: "
        "a CRI id is 64 hex digits and the shim's socket, <state>/shims/<id>/shim.sock, must fit in 107 bytes."
        + (f" Uncommitted files present in the project: {', '.join(res['untracked'])}." if res.get("untracked")
           else "")
        + f" The CRI part took {took:.0f} s (skip it with BENCH_CRI=0; run it alone with BENCH_ONLY=cri).")
    return head + ([note, ""] if note else []) + [*table(rows), "", *spread, "", text, ""]


def splice(doc: str, lines: list[str]) -> str:
    """doc with its CRI section replaced by lines (or lines put before the Logs section, else at the end)."""
    old = doc.split("\n")
    new = list(lines)
    start = next((i for i, ln in enumerate(old) if ln.startswith("## CRI")), None)
    if start is not None:
        end = next((i for i in range(start + 1, len(old)) if old[i].startswith("## ")), len(old))
        return "\n".join(old[:start] + new + old[end:])
    at = next((i for i, ln in enumerate(old) if ln.startswith("## Logs")), len(old))
    return "\n".join(old[:at] + new + old[at:])


def own_run_note(began: str, took: float, load: tuple, commit: str) -> str:
    return (f"_From a run of this part alone (`BENCH_ONLY=cri`), started {began} UTC, {took / 60:.1f} min, load "
            f"average {load[0]:.2f} at its start and {load[1]:.2f} at its end, shimd at commit {commit}; the other "
            "sections are from the run described at the top._")

