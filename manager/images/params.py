"""Parameters more than one image command reads."""

from __future__ import annotations

from runtime.skopeo import Platform
from shimproto.errors import InvalidArgument
from shimproto.wire import Params


def platform(p: Params) -> Platform:
    text = p.str("platform", "")
    try:
        return Platform.parse(text) if text else Platform()
    except ValueError as e:
        raise InvalidArgument(f"{p.method}: {e}") from None
