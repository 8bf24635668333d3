"""docs/chaos-report.md: what `make chaos` ran (tests/chaos/test_chaos.py's soak) and what the planted-bug tests
(tests/chaos/test_planted.py) found, written once at the end of the session (tests/chaos/conftest.py) when
CHAOS_REPORT names the file."""

from __future__ import annotations

from dataclasses import dataclass, field

from tests.chaos.ops import Stats


@dataclass
class Planted:
    bug: str
    invariant: str  # the invariant that should name it
    caught: bool
    finding: str  # the first finding that named the invariant (or every finding, when none did)


@dataclass
class Results:
    chaos: Stats | None = None
    planted: list[Planted] = field(default_factory=list)


RESULTS = Results()


def render(r: Results) -> str:
    out = ["# Chaos report\n"]
    s = r.chaos
    if s is not None:
        out.append(f"Written by `make chaos` (tests/chaos/test_chaos.py, tests/chaos/report.py); replay with "
                   f"`CHAOS_SEED={s.seed} make chaos`. The log-filesystem-full scenario is a test of its own "
                   f"(`test_chaos_with_the_log_filesystem_filling_up`, run by CI), so this run drops no log bytes.\n")
        rows = [
            ("seed", s.seed), ("duration", f"{s.seconds} s"), ("rounds", s.rounds),
            ("manager SIGKILLs", s.manager_kills),
            ("... that landed with operations in flight", s.kills_in_flight),
            ("... at a fault point (the manager killed itself there)", s.kills_at_fault_points),
            ("... of an idle manager", s.kills_idle),
            ("restarts under unshare --propagation slave", s.slave_restarts), ("shim SIGKILLs", s.shim_kills),
            ("warm template SIGKILLs (creates in flight forked cold or rolled back)", s.template_kills),
            ("spare shim SIGKILLs (the next create forked directly)", s.spare_kills),
            ("containers created (attempted)", s.containers),
            ("creates refused cleanly (injected runtime failures)", s.creates_failed),
            ("containers whose exit was checked", s.exits_checked), ("exec exits checked", s.execs_checked),
            ("attaches (lines checked)", f"{s.attaches} ({s.attach_lines_checked})"),
            ("log lines checked", s.log_lines_checked), ("log bytes dropped (disk full)", s.log_bytes_dropped),
            ("image imports / commits / removals", f"{s.image_imports} / {s.image_commits} / {s.image_removals}"),
            ("manager SIGKILLs that landed during an image operation", s.kills_in_image_ops),
            ("web containers (bridge network, a published port)", s.web_containers),
            ("manager SIGKILLs that landed during a web container's create or removal", s.kills_in_network_ops),
            ("containers with a restart policy (crash loops) / with a health check",
             f"{s.restart_containers} / {s.health_containers}"),
            ("restarts (restart events) / health_status events", f"{s.restarts_seen} / {s.health_status_events}"),
            ("shim SIGKILLs of those", s.restart_shim_kills),
            ("health-check processes seen in containers' cgroups (at most one each at a time)", s.health_probes_seen),
            ("bridge masquerade chains left by the known gap (docs/architecture.md)", len(s.known_masquerade_left)),
            ("invariants violated", len(s.violations)),
        ]
        out.append("| what | value |\n|---|---|")
        out += [f"| {k} | {v} |" for k, v in rows]
        out.append("\nFault points reached: " + ", ".join(f"`{k}` x{v}" for k, v in sorted(s.fault_points.items())))
        out.append("\n## Invariants checked, per kind\n\nWhat each invariant looked at, summed over the settled view "
                   "of every check (a container is counted once per check it was in; tests/chaos/invariants.py "
                   "says what each one means).\n\n| invariant | things checked | findings |\n|---|---|---|")
        found: dict[str, int] = {}
        for v in s.violations:
            name = v.split(": ", 2)[1] if v.count(": ") >= 2 else "?"
            found[name] = found.get(name, 0) + 1
        for name in sorted(set(s.checked) | set(found)):
            out.append(f"| {name} | {s.checked.get(name, 0)} | {found.get(name, 0)} |")
        if s.violations:
            out.append("\n## Violations\n\n" + "\n".join(f"- {v}" for v in s.violations))
    if r.planted:
        out.append("\n## Planted bugs\n\nEach run with SHIMD_PLANT=<bug> for the manager and its shims "
                   "(tests/chaos/test_planted.py; the bugs are in shimproto/plant.py): the smallest scenario that "
                   "exercises the invariant, which must then fail naming it.\n\n"
                   "| planted bug | invariant | caught | finding |\n|---|---|---|---|")
        for p in r.planted:
            finding = p.finding.replace("|", "\\|").replace("\n", " ")
            out.append(f"| `{p.bug}` | {p.invariant} | {'yes' if p.caught else '**no**'} | {finding[:200]} |")
    return "\n".join(out) + "\n"


def write(path: str, r: Results = RESULTS) -> None:
    with open(path, "w") as f:
        f.write(render(r))
