"""The manager's pure pieces and the rules the whole source keeps: the entry state table, no import circle, no
error matched by its message text, container statuses named in one place and written by one owner."""

from __future__ import annotations

import ast
import os
import re

import pytest

from manager.entry import STATES, TRANSITIONS, Entry
from manager.store import Meta
from shimproto.errors import InvalidState, NotFound, Unavailable
from shimproto.spec import ContainerSpec
from tests.harness import REPO

PACKAGES = ("shimproto", "runtime", "shimd", "manager", "shimctl")
EVENTS = sorted({event for (_state, event) in TRANSITIONS})


def _entry(state: str) -> Entry:
    return Entry(Meta(spec=ContainerSpec(args=["true"], id="c1", image="busybox"), lower="/"), state=STATES[state])


def test_every_listed_move_lands_on_a_known_state_and_every_other_move_is_refused():
    for name in STATES:
        for event in EVENTS:
            e = _entry(name)
            nxt = TRANSITIONS.get((name, event))
            if nxt is None:
                with pytest.raises(InvalidState, match=f"container c1: cannot .* while {name}"):
                    e.move(event)
                assert e.state.name == name
            else:
                e.move(event)
                assert e.state.name == nxt and nxt in STATES


def test_the_life_of_an_entry_through_create_loss_and_delete():
    e = _entry("creating")
    with pytest.raises(NotFound):
        e.check_listed()  # a create under way is not visible yet
    for event, state in (("created", "attached"), ("lose", "lost"), ("delete", "deleting"), ("removed", "removed")):
        e.move(event)
        assert e.state.name == state
    assert e.removed and not e.state.listed
    with pytest.raises(Unavailable, match="the shim of c1 is gone"):
        e.state.check_call(e)


def test_only_an_attached_or_lost_entry_may_start_a_delete_and_only_attached_watches_its_shim():
    for name, state in STATES.items():
        e = _entry(name)
        if name in ("attached", "lost"):
            state.check_delete(e)
        else:
            with pytest.raises(InvalidState):
                state.check_delete(e)
        assert state.watches_shim == (name == "attached")
        assert state.reachable == (name in ("restoring", "creating", "attached", "deleting", "relaunching"))


def _sources():
    for pkg in PACKAGES:
        for dirpath, _dirs, files in os.walk(os.path.join(REPO, pkg)):
            for f in files:
                if f.endswith(".py"):
                    path = os.path.join(dirpath, f)
                    yield path, os.path.relpath(path, REPO)


def _module(rel: str) -> str:
    mod = rel[:-3].replace(os.sep, ".")
    return mod.removesuffix(".__init__")


def _imports(tree: ast.AST, mod: str, is_pkg: bool, modules: set[str]) -> set[str]:
    """Every module imported anywhere in the file (functions included), except under `if TYPE_CHECKING:`.
    `from pkg import sub` depends on pkg.sub alone when sub is a module, on pkg's own body otherwise."""
    out: set[str] = set()
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip.update(id(n) for n in ast.walk(node))
    base = mod.split(".") if is_pkg else mod.split(".")[:-1]
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            parts = base[:len(base) - node.level + 1] if node.level else []
            target = ".".join(parts + ([node.module] if node.module else []))
            subs = {f"{target}.{a.name}" for a in node.names} & modules
            out.update(subs)
            if len(subs) < len(node.names):
                out.add(target)
    return out


def test_no_import_circle_anywhere_in_the_source():
    graph: dict[str, set[str]] = {}
    sources = list(_sources())
    modules = {_module(rel) for _path, rel in sources}
    for path, rel in sources:
        mod = _module(rel)
        with open(path) as f:
            graph[mod] = _imports(ast.parse(f.read()), mod, rel.endswith("__init__.py"), modules)
    for mod in graph:
        graph[mod] = {m for m in graph[mod] if m in graph and m != mod}
    cycles = []
    state: dict[str, int] = {}

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                cycles.append(path[path.index(n):] + [n])
            elif n not in state:
                visit(n, path + [n])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert not cycles, f"import circles: {cycles}"


# An error is told apart by its class, never by its text: `"..." in err.message`, `in str(e)` and the like.
TEXT_MATCH = re.compile(r"""(["'][^"'\n]+["']\s+(?:not\s+)?in\s+[^\n]*(?:\.message|str\(e|str\(err|["']error["']))"""
                        r"""|(?:\.message|str\(e\w*\))\.(?:startswith|endswith)\(""")
ALLOWED_TEXT_MATCH = {os.path.join("runtime", "errors.py")}  # the one place runc's own log is classified


def test_no_error_is_matched_by_its_message_text():
    found = []
    for path, rel in _sources():
        if rel in ALLOWED_TEXT_MATCH:
            continue
        with open(path) as f:
            for n, line in enumerate(f, 1):
                if TEXT_MATCH.search(line):
                    found.append(f"{rel}:{n}: {line.strip()}")
    assert not found, "errors matched by text:\n" + "\n".join(found)


def test_the_text_match_check_can_fail():
    assert TEXT_MATCH.search('if "holds no container" in st.get("error", ""):')
    assert TEXT_MATCH.search("if 'not found' in err.message:")
    assert TEXT_MATCH.search("if str(e).startswith('no such'):")
    assert not TEXT_MATCH.search('if probe.status not in (STOPPED, CREATED):')


STATUS_LITERAL = re.compile(r"""["'](?:created|running|paused|stopped|deleted)["']""")


def test_container_statuses_are_named_only_in_the_model():
    found = []
    for path, rel in _sources():
        if rel == os.path.join("shimproto", "model.py"):
            continue
        with open(path) as f:
            for n, line in enumerate(f, 1):
                code = line.split("#")[0]
                if not re.search(r"status|state", code):
                    continue  # an event type ("paused") is not a status
                for m in STATUS_LITERAL.finditer(code):
                    if re.search(r"""(?:==|!=|in \(|status["']\s*[:=]|status=)\s*$""", code[:m.start()]) or \
                            re.search(r"""^\s*[,)]""", code[m.end():]):
                        found.append(f"{rel}:{n}: {line.strip()}")
    assert not found, "status names written outside shimproto/model.py:\n" + "\n".join(found)


def test_the_status_check_can_fail():
    line = 'if init.state.name not in (CREATED, STOPPED, "deleted"):'
    assert re.search(r"status|state", line) and STATUS_LITERAL.search(line)


def test_a_container_status_is_written_only_by_the_event_log():
    writes = re.compile(r"""\.status\.update\(|\.status\[[^\]]+\]\s*=|\bstatus\.setdefault\(""")
    found = []
    for path, rel in _sources():
        if not rel.startswith("manager") or rel == os.path.join("manager", "events.py"):
            continue
        with open(path) as f:
            found += [f"{rel}:{n}: {line.strip()}" for n, line in enumerate(f, 1) if writes.search(line)]
    assert not found, "container status written outside manager/events.py:\n" + "\n".join(found)


def test_step_keys_fit_the_shims_limit_and_stay_distinct():
    from manager.lifecycle import step

    assert step("", "create") == ""
    assert step("k1", "create") == "k1/create"
    long = "a" * 64
    keys = {step(long, s) for s in ("create", "start", "restart")} | {step(step(long, "stop"), "term")}
    assert len(keys) == 4 and all(len(k) <= 64 for k in keys)


def test_every_command_module_serves_what_the_lazy_table_names_and_only_that():
    """manager.commands.Handlers imports a command's module at its first call, found through INDEX: every module
    named there must serve exactly the methods INDEX sends to it, and every module of the package be named."""
    import importlib

    from manager import commands

    served: dict[str, str] = {}
    for module in dict.fromkeys(commands.INDEX.values()):
        mod = importlib.import_module(f"manager.commands.{module}")
        names = mod.HANDLERS if module in commands.GROUPS else {mod.NAME: mod.handle}
        served |= dict.fromkeys(names, module)
    assert served == commands.INDEX
    helpers = {"__init__", "named", "params", "proxy"}
    files = {f[:-3] for f in os.listdir(os.path.join(REPO, "manager", "commands")) if f.endswith(".py")}
    assert files - helpers == set(commands.INDEX.values())
    assert not set(commands.INDEX) & set(commands.proxy.ROUTES)


def test_a_starting_manager_imports_no_command_module_before_a_call():
    import subprocess
    import sys

    probe = ("import sys, manager.__main__\n"
             "print(*sorted(m for m in sys.modules if m.startswith(('manager.commands.', 'manager.images', "
             "'runtime'))))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert out.stdout.split() == ["manager.commands.named", "manager.commands.params", "manager.commands.proxy"], \
        out.stderr


def test_a_shim_that_dies_without_answering_shutdown_ends_the_wait_at_once(tmp_path):
    """shutdown_shim against a shim on its way out (asked by a manager killed mid-rollback): it no longer answers,
    and exits 1.5 s later; the wait ends then, not at the call's 30 s timeout (which held a restore up once)."""
    import asyncio
    import subprocess
    import sys
    import time

    import zmq.asyncio

    from manager.lifecycle import shutdown_shim
    from shimproto.rpc import AsyncClient

    id = "c-silent"
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(1.5)", "shimd", id])

    class Shims:  # what shutdown_shim needs of the registry: a client of a socket nobody answers on
        def __init__(self, ctx: zmq.asyncio.Context) -> None:
            self.ctx = ctx

        def shim_client(self, id: str) -> AsyncClient:
            return AsyncClient(self.ctx, str(tmp_path / "shim.sock"), f"the shim of {id}")

    async def main() -> float:
        ctx = zmq.asyncio.Context()
        try:
            t0 = time.monotonic()
            await shutdown_shim(Shims(ctx), id, proc.pid, "test")  # type: ignore[arg-type]
            return time.monotonic() - t0
        finally:
            ctx.term()

    try:
        took = asyncio.run(main())
    finally:
        proc.kill()
        proc.wait(5)
    assert 1.0 < took < 10, f"shutdown_shim took {took:.1f}s"
