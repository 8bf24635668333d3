"""A CRI object's metadata, kept where the container is kept: one label of its shimd container.

The front holds no state. What CRI must answer that shimd does not know by itself (the kind of object, the pod a
container belongs to, CRI's metadata, labels and annotations, the log path kubelet chose, the image as asked for)
is written once, at create, as JSON in the label `io.shimd.cri`, and read back from the manager's listing. The
user's CRI labels are kept in that JSON too, so images' labels (merged into the container's by shimd) never leak
into CRI answers. The pod's namespace and name are also plain labels, so `shimctl ps` can show the pod."""

from __future__ import annotations

import calendar
import fnmatch
import json
import time
from dataclasses import asdict, dataclass, field

from shimproto.cri import parse_ts

LABEL = "io.shimd.cri"
POD_NAMESPACE, POD_NAME = "io.kubernetes.pod.namespace", "io.kubernetes.pod.name"
SANDBOX, CONTAINER = "sandbox", "container"


@dataclass
class CriMeta:
    kind: str  # SANDBOX or CONTAINER
    name: str
    attempt: int = 0
    namespace: str = ""  # sandboxes
    uid: str = ""  # sandboxes
    pod: str = ""  # containers: the sandbox's id
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    image: str = ""  # containers: the image as the client named it
    log_path: str = ""  # containers: the CRI log file kubelet chose ("" none)
    mounts: list[dict] = field(default_factory=list)  # containers: {container_path, host_path, readonly, propagation}
    pod_namespace: str = ""  # both: for `shimctl ps`
    pod_name: str = ""
    extra: dict = field(default_factory=dict)  # sandboxes: hostname, namespace options, runtime handler

    def labels_for_shimd(self) -> dict[str, str]:
        return {LABEL: json.dumps(asdict(self), sort_keys=True, separators=(",", ":")),
                POD_NAMESPACE: self.pod_namespace, POD_NAME: self.pod_name}

    @classmethod
    def of(cls, view: dict) -> CriMeta | None:
        """The CRI metadata of a listed/inspected container, or None for a container CRI did not make."""
        raw = ((view.get("spec") or {}).get("labels") or view.get("labels") or {}).get(LABEL)
        if not raw:
            return None
        try:
            return cls(**json.loads(raw))
        except (ValueError, TypeError):
            return None


def ns(text: str | None) -> int:
    """An RFC 3339 time of the manager's views -> unix nanoseconds (0 for none)."""
    if not text:
        return 0
    try:
        return parse_ts(text.encode())
    except (ValueError, IndexError):
        secs = calendar.timegm(time.strptime(text[:19], "%Y-%m-%dT%H:%M:%S"))
        return secs * 1_000_000_000


def selected(labels: dict[str, str], selector: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def id_matches(full: str, wanted: str) -> bool:
    """CRI filters take an id or a unique prefix of one (crictl sends what the user typed)."""
    return not wanted or full.startswith(wanted)


def glob_matches(text: str, pattern: str) -> bool:
    return fnmatch.fnmatchcase(text, pattern)
