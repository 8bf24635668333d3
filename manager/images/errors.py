"""skopeo's failures (typed once by runtime/skopeo.py) as the wire's errors, in one table."""

from __future__ import annotations

from runtime import skopeo
from shimproto.errors import InvalidArgument, NotFound, ShimdError, Unauthenticated, Unavailable

TABLE: tuple[tuple[type[skopeo.SkopeoError], type[ShimdError]], ...] = (
    (skopeo.ImageNotFound, NotFound),
    (skopeo.Unauthorized, Unauthenticated),
    (skopeo.Unreachable, Unavailable),
    (skopeo.InvalidReference, InvalidArgument),
    (skopeo.NoPlatform, NotFound),
    (skopeo.BadArchive, InvalidArgument),
)


def from_skopeo(e: skopeo.SkopeoError, what: str) -> ShimdError:
    cls = next((wire for kind, wire in TABLE if isinstance(e, kind)), InvalidArgument)
    if cls is Unauthenticated:  # said first: skopeo's own words end a long line
        return cls(f"unauthenticated: {what}: the registry refused the credentials, or none were given (an auth "
                   f"file): {e.message}")
    return cls(f"{what}: {e.message}")
