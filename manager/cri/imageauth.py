"""A PullImage's credentials (CRI's AuthConfig) as the docker-style auth file the manager's pull hands to skopeo.

Which registries get them, as containerd 1.6 decides (its ParseAuth, asked once per host it contacts): with a
server_address, only that host; without one, every host the pull may contact, which with registries.conf means
the image's own registry, the location it is rewritten to and every mirror of it. An auth file keys credentials by
host, so each of those hosts gets an entry.

The file lives in a private directory (0700, made by mkdtemp) under the front's state dir, is 0600, and is removed
when the pull returns, whatever happened: the credentials are on disk only while the pull runs, readable by root
only. Nothing here logs a credential."""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import shutil
import tempfile
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager

from manager.images import reference
from shimproto.errors import InvalidArgument

from .pb import api_pb2

log = logging.getLogger("shimd.cri")


def entry(auth: api_pb2.AuthConfig) -> dict | None:
    """The auth file's entry for these credentials, or None when they are empty (anonymous access, as
    containerd takes an empty AuthConfig). Username and password come first, then an identity token, then
    `auth` (base64 of "user:password"); a registry token alone is not supported (containerd's neither)."""
    if auth.username:
        return {"auth": base64.b64encode(f"{auth.username}:{auth.password}".encode()).decode()}
    if auth.identity_token:
        return {"identitytoken": auth.identity_token}
    if auth.auth:
        try:
            decoded = base64.b64decode(auth.auth, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            raise InvalidArgument("PullImage: auth.auth is not base64 of \"user:password\"") from None
        user, sep, password = decoded.partition(":")
        if not sep:
            raise InvalidArgument("PullImage: auth.auth decodes to no \"user:password\"")
        return {"auth": base64.b64encode(f"{user}:{password.strip(chr(0))}".encode()).decode()}
    if auth.registry_token:
        raise InvalidArgument("PullImage: a registry_token alone is not supported (give username/password, auth "
                              "or identity_token)")
    return None


def host_of(address: str) -> str:
    """The host[:port] of a server address: "https://reg.example:5000/v1/" and "reg.example:5000" alike."""
    rest = address.split("://", 1)[1] if "://" in address else address
    return rest.split("/", 1)[0]


def _matches(prefix: str, name: str) -> bool:
    if prefix.startswith("*."):  # a wildcard names hosts under a domain
        return name.split("/", 1)[0].endswith(prefix[1:])
    return name == prefix or name.startswith(prefix.rstrip("/") + "/")


def endpoints(registries_conf: str, name: str) -> list[str]:
    """The hosts a pull of the repository `name` (domain/path) may contact according to registries_conf (v2): the
    location of the longest matching [[registry]] prefix and its mirrors. [] when no entry matches or the file
    cannot be read (the pull then meets the same file and says what is wrong with it)."""
    if not registries_conf:
        return []
    try:
        with open(registries_conf, "rb") as f:
            conf = tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError) as e:
        log.debug("registries.conf %s: %s", registries_conf, e)
        return []
    best: dict | None = None
    for reg in conf.get("registry") or []:
        if not isinstance(reg, dict):
            continue
        prefix = reg.get("prefix") or reg.get("location") or ""
        if isinstance(prefix, str) and prefix and _matches(prefix, name):
            if best is None or len(prefix) > len(best.get("prefix") or best.get("location") or ""):
                best = reg
    if best is None:
        return []
    locations = [best.get("location") or ""] + [m.get("location") or "" for m in best.get("mirror") or []
                                                 if isinstance(m, dict)]
    return [host_of(loc) for loc in locations if isinstance(loc, str) and loc]


def hosts_for(auth: api_pb2.AuthConfig, image: str, registries_conf: str) -> list[str]:
    """The hosts the credentials are for (see the module's docstring)."""
    if auth.server_address:
        return [host_of(auth.server_address)]
    ref = reference.parse(image)
    out = [ref.domain]
    for h in endpoints(registries_conf, ref.name):
        if h not in out:
            out.append(h)
    return out


@contextmanager
def auth_file(state: str, auth: api_pb2.AuthConfig | None, image: str, registries_conf: str) -> Iterator[str]:
    """An auth file for the pull of image, its path yielded ("" when there are no credentials), removed on exit."""
    e = entry(auth) if auth is not None else None
    if e is None:
        yield ""
        return
    d = tempfile.mkdtemp(prefix="cri-auth-", dir=state)
    try:
        path = os.path.join(d, "auth.json")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump({"auths": {h: e for h in hosts_for(auth, image, registries_conf)}}, f)  # type: ignore[arg-type]
        yield path
    finally:
        shutil.rmtree(d, ignore_errors=True)
