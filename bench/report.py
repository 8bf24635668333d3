"""Renders the figures as docs/benchmarks.md: one row per figure, runc alone | shimd | containerd | ratios | goal."""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from util import MiB, median


@dataclass
class Row:
    figure: str
    runc: float | None
    shimd: float | None
    containerd: float | None
    unit: str  # "ms" (values in seconds), "MiB" (bytes), "s" (seconds), "" (a count)
    goal: str = ""

    def cell(self, v: float | None) -> str:
        if v is None:
            return "-"
        if self.unit == "ms":
            return f"{v * 1000:.1f} ms" if v < 0.01 else f"{v * 1000:.0f} ms"
        if self.unit == "MiB":
            return f"{v / MiB:.2f} MiB" if v < 10 * MiB else f"{v / MiB:.1f} MiB"
        if self.unit == "s":
            return f"{v:.1f} s"
        return f"{v:g}"

    def render(self) -> str:
        ratio = _ratio(self.shimd, self.containerd)
        floor = _ratio(self.shimd, self.runc)
        return (f"| {self.figure} | {self.cell(self.runc)} | {self.cell(self.shimd)} | {self.cell(self.containerd)} "
                f"| {ratio} | {floor} | {self.goal} |")


def _ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}" if a is not None and b else "-"


HEAD = ["| figure | runc alone | shimd | containerd | shimd / containerd | shimd / runc | goal (issue 10) |",
        "|---|---|---|---|---|---|---|"]


def table(rows: list[Row]) -> list[str]:
    return HEAD + [r.render() for r in rows]


def latency_rows(lat: dict, api: dict, exits: dict) -> list[Row]:
    def m(d: dict, k: str) -> float | None:
        return median(d.get(k, []))

    return [
        Row("detached start: `run -d busybox sleep` (CLI, spawn to exit)", m(lat["detached"], "runc"),
            m(lat["detached"], "shimd"), m(lat["detached"], "containerd"), "ms", "ratio <= 1.0; stretch <= 2x runc"),
        Row("`run --rm busybox /bin/true` to exit and delete (CLI)", m(lat["true"], "runc"), m(lat["true"], "shimd"),
            m(lat["true"], "containerd"), "ms", "ratio <= 1.0; stretch <= 2x runc"),
        Row("create+start through the API from a connected client (runc: `create` + `start`)", m(api, "runc"),
            m(api, "shimd"), None, "ms", "reported"),
        Row("`kill -9` of the init to its exit event at a connected `events` subscriber", None,
            m(exits, "shimd"), m(exits, "containerd"), "ms", "reported, against containerd"),
    ]


def memory_rows(mem: dict, count: int) -> list[Row]:
    s, c = mem["shimd"], mem["containerd"]
    goal = "ratio <= 1.0; stretch <= 1.0 MiB"
    rows = [
        Row(f"USS per container monitor (shim), median of {count}, right after start", None, s["uss"], c["uss"],
            "MiB", "reported" if s.get("merged") else goal),
        Row("PSS per container monitor (shim), median, right after start", None, s["pss"], c["pss"], "MiB",
            "reported"),
    ]
    if s.get("merged"):
        k, sm, cm = s["ksm"], s["merged"], c["merged"]
        when = f"after {k['scans']} full ksmd scans ({k['waited']:.0f} s; ksmd used {k['cpu']:.1f} s of CPU)"
        rows += [Row(f"USS per container monitor (shim), median, {when}", None, sm["uss"], cm["uss"], "MiB", goal),
                 Row("PSS per container monitor (shim), median, merged", None, sm["pss"], cm["pss"], "MiB",
                     "reported"),
                 Row(f"USS of all {count} monitors together, merged", None, sm["uss_sum"], cm["uss_sum"], "MiB", ""),
                 Row(f"PSS of all {count} monitors together, merged, shimd's other processes included", None,
                     sm["pss_sum"] + sm["helpers_pss"], cm["pss_sum"], "MiB", "reported")]
    else:
        rows += [Row(f"USS of all {count} monitors together", None, s["uss_sum"], c["uss_sum"], "MiB", ""),
                 Row(f"PSS of all {count} monitors together, shimd's other processes included", None,
                     s["pss_sum"] + s["helpers_pss"], c["pss_sum"], "MiB", "reported")]
    rows += [
        Row("threads per shim, median", None, s["threads"], c["threads"], "", ""),
        Row("daemon RSS (shimd manager; containerd)", None, s["daemon_rss"], c["daemon_rss"], "MiB", "reported"),
        Row("daemon open file descriptors", None, s["daemon_fds"], c["daemon_fds"], "", ""),
    ]
    if s["helpers"]:
        rows.append(Row(f"USS of the manager's other processes ({s['helpers']}: "
                        f"{', '.join(s['helper_kinds'])}; RSS "
                        f"{s['helpers_rss'] / MiB:.1f} MiB)", None, s["helpers_uss"], None, "MiB", "reported"))
    rows.append(Row(f"daemon SIGKILL + start until all {count} are listed running", None, median(s["restore"]),
                    median(c["restore"]), "ms", "ratio <= 1.0"))
    return rows


def scale_rows(sc: dict) -> list[Row]:
    n, mem = sc["count"], sc["mem"]
    return [
        Row(f"containers listed running (of {n})", None, sc["listed_running"], None, "", f"all {n}"),
        Row("`shimctl ps` (CLI, spawn to exit), median", None, median(sc["ps_cli"]), None, "ms", "< 200 ms"),
        Row("`list` through the API from a connected client, median", None, median(sc["ps_api"]), None, "ms", ""),
        Row(f"USS of all {n} shims together", None, mem["uss_sum"], None, "MiB", "reported"),
        Row(f"PSS of all {n} shims together, the warm template included", None,
            mem["pss_sum"] + mem["helpers_pss"], None, "MiB", ""),
        Row("USS per shim, median (right after start, before ksmd merged)", None, mem["uss"], None, "MiB", ""),
        Row("PSS per shim, median (right after start)", None, mem["pss"], None, "MiB", ""),
        Row("manager RSS", None, mem["daemon_rss"], None, "MiB", "reported"),
        Row("manager open file descriptors", None, mem["daemon_fds"],
            None, "", ""),
        Row(f"daemon SIGKILL + start until all {n} are listed running", None, median(sc["restore"]), None, "ms",
            "< 1 s"),
        Row(f"create+start all {n} through the API ({sc['workers']} clients at once), wall time", None,
            sc["start_all"], None, "s", ""),
        Row(f"delete all {n} through the API ({sc['workers']} clients at once), wall time", None, sc["remove_all"],
            None, "s", ""),
    ]


def spread(lat: dict, api: dict, exits: dict) -> list[str]:
    """min / quartiles / max of every latency figure's samples, in ms: how noisy the run was."""
    out = ["| samples (ms): min / p25 / median / p75 / max | runc alone | shimd | containerd |", "|---|---|---|---|"]
    for label, d in (("`run -d`", lat["detached"]), ("`run --rm true`", lat["true"]), ("API create+start", api),
                     ("kill -9 to exit event", exits)):
        cells = []
        for k in ("runc", "shimd", "containerd"):
            xs = sorted(d.get(k, []))
            if not xs:
                cells.append("-")
                continue
            q = statistics.quantiles(xs, n=4) if len(xs) > 1 else [xs[0]] * 3
            cells.append(" / ".join(f"{v * 1000:.1f}" for v in (xs[0], q[0], q[1], q[2], xs[-1])))
        out.append(f"| {label} ({len(next(iter(d.values()), []))} each) | " + " | ".join(cells) + " |")
    return out
