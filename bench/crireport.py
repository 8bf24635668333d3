"""The CRI part's section of docs/benchmarks.md (bench/cri.py measures): one table of medians in bench/report.py's
rows (host-network pods, then CNI pods), the spread of the samples, and what was done, from the run's own facts."""

from __future__ import annotations

import statistics

from report import Row, table
from util import median

STEPS = ("runp", "create", "start")
KINDS = ("host", "cni")


def _med(samples: list[dict[str, float]], step: str) -> float | None:
    return median([sum(x.values()) if step == "total" else x[step] for x in samples])


LABELS = {"host": ("host network", "host-network", "the pause stand-in"),  # network, pod, sandbox
          "cni": ("CNI network", "CNI", "the pause stand-in; bridge + host-local + portmap")}


def _rows(res: dict, kind: str) -> list[Row]:
    s, c = res["samples"][kind]["shimd"], res["samples"][kind]["containerd"]
    net, pod, sandbox = LABELS[kind]
    label = {"runp": f"`crictl runp`, {net} (sandbox: {sandbox})",
             "create": f"`crictl create` in a {pod} pod (busybox `sleep`, image already pulled)",
             "start": f"`crictl start` in a {pod} pod", "total": f"runp + create + start, per {pod} pod"}
    return [Row(label[k], None, _med(s, k), _med(c, k), "ms", "reported" if k == "total" else "")
            for k in (*STEPS, "total")]


def _spread(res: dict) -> list[str]:
    out = ["| samples (ms): min / p25 / median / p75 / max | shimd | containerd |", "|---|---|---|"]
    for kind in KINDS:
        s, c = res["samples"][kind]["shimd"], res["samples"][kind]["containerd"]
        for k in (*STEPS, "total"):
            cells = []
            for xs in (s, c):
                v = sorted(sum(x.values()) if k == "total" else x[k] for x in xs)
                q = statistics.quantiles(v, n=4) if len(v) > 1 else [v[0]] * 3
                cells.append(" / ".join(f"{x * 1000:.1f}" for x in (v[0], q[0], q[1], q[2], v[-1])))
            out.append(f"| {LABELS[kind][1]} pod: {k} ({len(s)} each) | " + " | ".join(cells) + " |")
    return out


def section(res: dict | None, took: float, note: str = "") -> list[str]:
    """The CRI figures as a section of docs/benchmarks.md."""
    head = ["## CRI: a pod with one container through crictl", ""]
    if not res:
        return head + ["_Skipped in this run (BENCH_CRI=0)._", ""]
    if "error" in res:
        return head + [f"_The CRI part failed: {res['error']}_", ""]
    rows = _rows(res, "host") + _rows(res, "cni")
    (sb, ss), (cb, cs) = res["nets"]["shimd"], res["nets"]["containerd"]
    left = (f" Left in the namespace once every pod was removed: {', '.join(res['left'])}." if res["left"] else
            " Once every pod was removed, no veth and no host-local lease was left in the namespace.")
    text = (
        f"{res['n']} pods of each kind per runtime, host-network pods (namespace_options network NODE) and CNI pods "
        "(network POD) in turn, the runtimes alternating (the orders rotating), each step timed from spawn to exit "
        "of `crictl` (the same Go binary for both, started through `nsenter --net`; its own start-up is in every "
        "figure); the total is the median of each pod's sum. Each pod was stopped and removed after its "
        "measurement (untimed), and one pod of each kind per runtime was made and removed before (warm-up, "
        "untimed); a CNI pod's address was checked to be in its runtime's subnet (untimed). Both daemons, the "
        "registry and crictl ran in a network namespace the bench made (`ip netns add`, loopback up, entered "
        "with `nsenter --net`), deleted at the end: nothing touched the host's network. Same images for both, "
        "pulled with `crictl pull` through each runtime's CRI socket before anything was timed: the CRI tests' "
        "stand-ins (tests/cri_images.py) served by a docker-registry on 127.0.0.1 inside the namespace "
        f"(`{res['images'][0]}` as both runtimes' sandbox image, a busybox running `sleep 100000` in the pod), "
        "plain HTTP through shimd's [cri] registries_conf (`insecure = true`) and containerd's hosts.toml. "
        "shimd: its CRI front (`python -m manager.cri`) before a manager set up as for the figures above, its "
        f"state directory under the bench's temp dir ({res['state']}: a shim's socket path is "
        f"{res['sock_len']} bytes of the 107 that fit); containerd 1.6: its CRI plugin with runc.v2 and the "
        "overlayfs snapshotter. CNI: the same conflist shape for both in each runtime's configuration directory "
        "(bridge with isGateway and ipMasq, host-local IPAM keeping its leases under the bench's directory, "
        f"portmap; the plugins of /usr/lib/cni): bridge `{sb}` on {ss} for shimd, `{cb}` on {cs} for "
        "containerd; the pods mapped no ports, so portmap had nothing to set up." + left
        + f" The CRI part took {took:.0f} s (skip it with BENCH_CRI=0; run it alone with BENCH_ONLY=cri).")
    return head + ([note, ""] if note else []) + [*table(rows), "", *_spread(res), "", text, ""]


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

