"""transfers {ref?} -> [{source, state, bytes, layers_done, layers, seconds, error}]: the pulls and imports under
way (all, or the one of ref: a reference as pull was given it, or an import's path). state is fetching (skopeo
copying: layers_done of the layers it has started, bytes so far) or unpacking (every layer fetched; checked,
unpacked and stored). `shimctl pull` shows it on a terminal."""

from __future__ import annotations

from shimproto.wire import Params

from ..registry import Registry

NAME = "transfers"


async def handle(m: Registry, p: Params) -> list[dict]:
    return m.images.progress(p.str("ref", ""))
