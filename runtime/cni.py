"""The CNI plugins, invoked as the CNI specification (1.0) says: one typed wrapper, shaped like runc.py.

A network configuration list (a "conflist": {cniVersion, name, plugins: [...]}) is run plugin by plugin: each
plugin binary (found in the plugin directories) gets its own configuration on stdin (the list's cniVersion and
name added, `runtimeConfig` filled from the capabilities it declares, `prevResult` chained from the previous
plugin on ADD, the cached ADD result on DEL and CHECK) and the `CNI_*` variables in its environment; its result
(or error) is JSON on stdout. ADD runs the list in order, DEL and CHECK in reverse as the spec says. Plugins are
started through the caller's Monitor (the shim's reaper), so this module never waits on a process itself. Errors
become typed exceptions once, from the plugin's own error object (its numeric code), never by matching text.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field

from .runc import Monitor

PLUGIN_DIRS = ("/usr/lib/cni", "/opt/cni/bin")
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"  # the plugins run iptables, ip


class CniError(Exception):
    """A plugin failed. .code is the spec's error code (0 when the plugin gave none), .plugin its type."""

    def __init__(self, plugin: str, command: str, code: int, message: str, details: str = "") -> None:
        super().__init__(f"CNI {command} {plugin}: {message}" + (f" ({details})" if details else ""))
        self.plugin = plugin
        self.command = command
        self.code = code
        self.message = message
        self.details = details


class PluginNotFound(CniError):
    """No binary of that plugin type in the plugin directories."""


class BadConfig(CniError):
    """The plugin refused its configuration (spec codes 1, 2, 4, 6, 7: version, field, environment, decode,
    network configuration)."""


class TryAgain(CniError):
    """Spec code 11: a transient failure; the same call may work later."""


_BY_CODE: dict[int, type[CniError]] = {1: BadConfig, 2: BadConfig, 4: BadConfig, 6: BadConfig, 7: BadConfig,
                                       11: TryAgain}


def classify(plugin: str, command: str, output: str, exit_code: int) -> CniError:
    """The typed error of a plugin that exited non-zero, from the error object it printed."""
    try:
        raw = json.loads(output)
    except ValueError:
        raw = None
    if not isinstance(raw, dict):
        return CniError(plugin, command, 0, output.strip()[-400:] or f"exited with status {exit_code}")
    code = raw.get("code") if isinstance(raw.get("code"), int) else 0
    cls = _BY_CODE.get(code, CniError)  # type: ignore[arg-type]
    return cls(plugin, command, code, str(raw.get("msg", "")), str(raw.get("details", "")))  # type: ignore[arg-type]


@dataclass(frozen=True)
class CniArgs:
    """The per-call parameters the spec passes in the environment."""

    command: str  # ADD, DEL, CHECK
    container_id: str
    netns: str  # a path to the network namespace ("" for a DEL whose namespace is gone)
    ifname: str
    path: tuple[str, ...] = PLUGIN_DIRS

    def env(self, base: dict[str, str]) -> dict[str, str]:
        out = {k: v for k, v in base.items() if not k.startswith("CNI_")}
        out.setdefault("PATH", DEFAULT_PATH)
        out.update(CNI_COMMAND=self.command, CNI_CONTAINERID=self.container_id, CNI_NETNS=self.netns,
                   CNI_IFNAME=self.ifname, CNI_PATH=":".join(self.path))
        return out


@dataclass
class IPConfig:
    address: str  # CIDR, e.g. 10.88.0.2/16
    gateway: str = ""
    interface: int | None = None

    @property
    def ip(self) -> str:
        return self.address.split("/", 1)[0]


@dataclass
class Result:
    """A plugin's (or a list's final) success result, parsed; .raw is kept verbatim for DEL and CHECK."""

    raw: dict
    ips: list[IPConfig] = field(default_factory=list)
    interfaces: list[dict] = field(default_factory=list)

    @classmethod
    def parse(cls, raw: object) -> Result:
        if not isinstance(raw, dict):
            raise ValueError("a CNI result must be a JSON object")
        ips = [IPConfig(str(i.get("address", "")), str(i.get("gateway", "")), i.get("interface"))
               for i in raw.get("ips") or [] if isinstance(i, dict)]
        ifaces = [i for i in raw.get("interfaces") or [] if isinstance(i, dict)]
        return cls(raw=raw, ips=ips, interfaces=ifaces)

    def sandbox_ip(self) -> str:
        """The first address on an interface inside the namespace (one with a sandbox), else the first one."""
        for ipc in self.ips:
            if ipc.interface is not None and 0 <= ipc.interface < len(self.interfaces) and \
                    self.interfaces[ipc.interface].get("sandbox"):
                return ipc.ip
        return self.ips[0].ip if self.ips else ""


def plugin_config(conflist: dict, plugin: dict, runtime_config: dict, prev: dict | None) -> dict:
    """What one plugin of the list reads on stdin (pure)."""
    conf = dict(plugin, cniVersion=conflist["cniVersion"], name=conflist["name"])
    wanted = {k: v for k, v in runtime_config.items() if (plugin.get("capabilities") or {}).get(k)}
    if wanted:
        conf["runtimeConfig"] = wanted
    if prev is not None:
        conf["prevResult"] = prev
    return conf


class Cni:
    def __init__(self, monitor: Monitor, path: tuple[str, ...] | None = None, tmp_dir: str | None = None,
                 env: dict[str, str] | None = None) -> None:
        """path: the plugin directories; by default CNI_PATH of our environment (as cnitool reads it), else
        PLUGIN_DIRS."""
        self.monitor = monitor
        self.path = path or tuple(d for d in os.environ.get("CNI_PATH", "").split(":") if d) or PLUGIN_DIRS
        self.tmp_dir = tmp_dir
        self.env = dict(os.environ if env is None else env)

    def find(self, plugin: str) -> str:
        for d in self.path:
            p = os.path.join(d, plugin)
            if os.access(p, os.X_OK) and "/" not in plugin:
                return p
        raise PluginNotFound(plugin, "find", 0, f"no plugin {plugin!r} in {':'.join(self.path)}")

    async def _exec(self, plugin: dict, conf: dict, args: CniArgs) -> dict | None:
        kind = str(plugin.get("type", ""))
        binary = self.find(kind)
        with tempfile.TemporaryFile(dir=self.tmp_dir) as stdin, tempfile.TemporaryFile(dir=self.tmp_dir) as out:
            stdin.write(json.dumps(conf).encode())
            stdin.flush()
            stdin.seek(0)
            code = await self.monitor.run([binary], stdin=stdin.fileno(), stdout=out.fileno(),
                                          stderr=out.fileno(), env=args.env(self.env), group=True)  # with its iptables
            out.seek(0)
            text = out.read().decode(errors="replace")
        if code != 0:
            raise classify(kind, args.command, text, code)
        if args.command != "ADD":
            return None
        try:
            raw = json.loads(text)
        except ValueError as e:
            raise CniError(kind, args.command, 0, f"result is not JSON: {text[:200]!r}") from e
        if not isinstance(raw, dict):
            raise CniError(kind, args.command, 0, "result is not a JSON object")
        return raw

    def _args(self, command: str, container_id: str, netns: str, ifname: str) -> CniArgs:
        return CniArgs(command, container_id, netns, ifname, self.path)

    async def add(self, conflist: dict, container_id: str, netns: str, ifname: str,
                  runtime_config: dict | None = None) -> Result:
        """ADD every plugin in order, each given the previous one's result; the last result, parsed."""
        args = self._args("ADD", container_id, netns, ifname)
        prev: dict | None = None
        for plugin in conflist["plugins"]:
            prev = await self._exec(plugin, plugin_config(conflist, plugin, runtime_config or {}, prev), args)
        return Result.parse(prev or {})

    async def delete(self, conflist: dict, container_id: str, netns: str, ifname: str,
                     runtime_config: dict | None = None, prev: dict | None = None) -> None:
        """DEL every plugin in reverse order with the cached ADD result (None after an ADD that never finished).
        Every plugin is asked even when one fails; the first failure is raised at the end."""
        args = self._args("DEL", container_id, netns, ifname)
        first: CniError | None = None
        for plugin in reversed(conflist["plugins"]):
            try:
                await self._exec(plugin, plugin_config(conflist, plugin, runtime_config or {}, prev), args)
            except CniError as e:
                first = first or e
        if first is not None:
            raise first

    async def check(self, conflist: dict, container_id: str, netns: str, ifname: str,
                    runtime_config: dict | None, prev: dict) -> None:
        """CHECK every plugin (in order) against the cached ADD result; raises the first failure."""
        args = self._args("CHECK", container_id, netns, ifname)
        for plugin in conflist["plugins"]:
            await self._exec(plugin, plugin_config(conflist, plugin, runtime_config or {}, prev), args)
