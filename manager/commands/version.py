"""version {} -> {version, api_version, runtime, runtime_version}: what answers on this socket.

version is the manager's package version, api_version the version of this wire API (raised when a command changes
incompatibly), runtime the OCI runtime binary the manager drives and runtime_version what `<runtime> --version`
says ("" when it cannot be run: the reply still comes, the runtime's failure shows where containers are made).
Asking the binary its version runs no container, so it is the one runtime call the manager makes itself.
"""

from __future__ import annotations

import asyncio
import os
import re
from typing import TYPE_CHECKING

from shimproto.wire import Params

if TYPE_CHECKING:
    from ..registry import Registry

NAME = "version"
API_VERSION = 1
RUNTIME_TIMEOUT = 5.0


def package_version() -> str:
    # imported here: importlib.metadata costs ~11 ms, which every manager start (and so every restore) paid
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("shimd")
    except PackageNotFoundError:
        return "unknown"


async def runtime_version(runtime: str) -> str:
    """The version in the first line of `runtime --version` ("runc version 1.1.5" -> "1.1.5"), or ""."""
    try:
        proc = await asyncio.create_subprocess_exec(runtime, "--version", stdin=asyncio.subprocess.DEVNULL,
                                                    stdout=asyncio.subprocess.PIPE,
                                                    stderr=asyncio.subprocess.DEVNULL)
    except OSError:
        return ""
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), RUNTIME_TIMEOUT)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return ""
    m = re.search(r"version\s+(\S+)", out.decode(errors="replace").partition("\n")[0])
    return m.group(1) if proc.returncode == 0 and m else ""


async def handle(m: Registry, p: Params) -> dict:
    return {"version": package_version(), "api_version": API_VERSION, "runtime": os.path.basename(m.runtime),
            "runtime_version": await runtime_version(m.runtime)}
