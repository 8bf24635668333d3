"""docker's `exec -u`: "UID", "UID:GID", "NAME" or "NAME:GROUP", resolved in the container's own /etc/passwd and
/etc/group (read from its root filesystem, never following a link out of it), as an OCI process user."""

from __future__ import annotations

import os

from shimproto.errors import InvalidArgument


def _read_db(rootfs: str, name: str) -> list[list[str]]:
    """The colon-separated entries of rootfs/etc/<name>; [] when it is missing or leads out of rootfs."""
    path = os.path.join(rootfs, "etc", name)
    real = os.path.realpath(path)
    if not real.startswith(os.path.realpath(rootfs) + os.sep):
        return []
    try:
        with open(real, errors="replace") as f:
            return [line.rstrip("\n").split(":") for line in f if line.strip() and not line.startswith("#")]
    except OSError:
        return []


def _id(value: str) -> int | None:
    return int(value) if value.isascii() and value.isdigit() and int(value) < 2**32 - 1 else None


def resolve_user(rootfs: str, spec: str) -> dict:
    """{uid, gid, additionalGids} for spec; InvalidArgument naming spec when a name is unknown or it is malformed."""
    user, _, group = spec.partition(":")
    if not user or (":" in spec and not group):
        raise InvalidArgument(f"invalid user {spec!r}: expected UID, UID:GID, NAME or NAME:GROUP")
    passwd = [e for e in _read_db(rootfs, "passwd") if len(e) >= 4]
    uid, gid, name = _id(user), 0, user
    entry = next((e for e in passwd if (e[0] == user if uid is None else _id(e[2]) == uid)), None)
    if entry is None and uid is None:
        raise InvalidArgument(f"unable to find user {user!r}: no matching entry in the container's /etc/passwd")
    if entry is not None:
        name, uid = entry[0], _id(entry[2])
        gid = _id(entry[3]) or 0
    groups = [e for e in _read_db(rootfs, "group") if len(e) >= 3]
    if group:
        g = _id(group)
        if g is None:
            match = next((e for e in groups if e[0] == group), None)
            if match is None or _id(match[2]) is None:
                raise InvalidArgument(f"unable to find group {group!r}: no matching entry in the container's "
                                      f"/etc/group")
            g = _id(match[2])
        gid = g  # type: ignore[assignment]
    if uid is None:
        raise InvalidArgument(f"invalid user {spec!r}: uid out of range")
    extra = sorted({_id(e[2]) for e in groups if len(e) >= 4 and name in e[3].split(",") and _id(e[2]) is not None}
                   - {gid})
    return {"uid": uid, "gid": gid, "additionalGids": extra} if extra else {"uid": uid, "gid": gid}


def with_groups(rootfs: str, user: dict, group_add: list[str]) -> dict:
    """docker's --group-add: the user's groups (its own from /etc/group included) then each given one, a gid or
    a name of the container's /etc/group (InvalidArgument naming an unknown one); the primary gid not repeated."""
    if not group_add:
        return user
    groups = {e[0]: _id(e[2]) for e in _read_db(rootfs, "group") if len(e) >= 3 and _id(e[2]) is not None}
    extra = list(user.get("additionalGids", []))
    for g in group_add:
        gid = _id(g) if g.isascii() and g.isdigit() else groups.get(g)
        if gid is None:
            raise InvalidArgument(f"group_add: unable to find group {g!r} in the container's /etc/group")
        if gid != user["gid"] and gid not in extra:
            extra.append(gid)
    return {**user, "additionalGids": extra}
