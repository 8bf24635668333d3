"""Image references as docker reads them: `[DOMAIN[:PORT]/]PATH[:TAG][@DIGEST]`, normalized once.

A name without a domain is Docker Hub's (`redis` -> `docker.io/library/redis`); a first component with a `.` or a
`:`, or `localhost`, is a domain. No tag and no digest means `:latest`. The store keys tags by the normalized
form; people see the familiar one (docker.io/library/ dropped).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from shimproto.errors import InvalidArgument

DEFAULT_DOMAIN = "docker.io"
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_PATH = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
_HOST = r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)(?:\.[a-zA-Z0-9-]+)*|\[[0-9a-fA-F:]+\]"
_DOMAIN = re.compile(rf"(?:{_HOST})(?::[0-9]+)?")
_TAG = re.compile(r"[\w][\w.-]{0,127}")
DIGEST = re.compile(r"sha256:[0-9a-f]{64}")


@dataclass(frozen=True)
class Reference:
    domain: str
    path: str
    tag: str = ""
    digest: str = ""

    @property
    def name(self) -> str:
        return f"{self.domain}/{self.path}"

    def __str__(self) -> str:
        """The normalized form: docker.io/library/redis:7, 127.0.0.1:5000/app@sha256:..."""
        return self.name + (f":{self.tag}" if self.tag else "") + (f"@{self.digest}" if self.digest else "")

    @property
    def familiar_name(self) -> str:
        if self.domain == DEFAULT_DOMAIN:
            return self.path.removeprefix("library/")
        return self.name

    @property
    def familiar(self) -> str:
        return self.familiar_name + (f":{self.tag}" if self.tag else "") + (f"@{self.digest}" if self.digest else "")


def parse(text: str) -> Reference:
    """A reference as typed -> its normalized parts; InvalidArgument naming it when it is not one."""
    rest, _, digest = text.partition("@")
    if digest and not DIGEST.fullmatch(digest):
        raise InvalidArgument(f"invalid reference {text!r}: digest must be sha256:<64 hex digits>")
    name, tag = rest, ""
    slash = rest.rfind("/")
    colon = rest.rfind(":")
    if colon > slash:
        name, tag = rest[:colon], rest[colon + 1:]
        if not _TAG.fullmatch(tag):
            raise InvalidArgument(f"invalid reference {text!r}: bad tag {tag!r}")
    first, sep, remainder = name.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost" or first.startswith("[")):
        domain, path = first, remainder
        if not _DOMAIN.fullmatch(domain):
            raise InvalidArgument(f"invalid reference {text!r}: bad registry address {domain!r}")
    else:
        domain, path = DEFAULT_DOMAIN, name
        if "/" not in path:
            path = f"library/{path}"
    if not _PATH.fullmatch(path) or len(name) > 255:
        raise InvalidArgument(f"invalid reference {text!r}: repository names are lower-case letters, digits and "
                              f"separators (. _ - /)")
    if not tag and not digest:
        tag = "latest"
    return Reference(domain, path, tag, digest)


def tagged(text: str) -> Reference:
    """A reference that names a tag (for tag, pull's record, import --tag): a digest is refused."""
    ref = parse(text)
    if ref.digest:
        raise InvalidArgument(f"invalid tag {text!r}: a tag cannot name a digest")
    return ref
