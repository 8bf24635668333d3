"""Deterministic fault injection for tests: SHIMD_FAULTS=point[,point...] makes the manager SIGKILL itself when it
reaches a named point. Off (and free) unless the variable is set."""

from __future__ import annotations

import logging
import os
import signal

# the image store's points (and commit's pause): tests/test_images_crash.py kills the manager at each, and the chaos
# rounds reach each in a fault round of its own (an import, a removal of an image it committed, a commit of a running
# container)
IMAGE_POINTS = (
    "image:fetched",        # a pull's or import's layout is under ingest/, nothing of it in the store
    "image:unpacked",       # its blobs and layers are in the store, the index does not list them yet
    "image:untagged",       # an image removal wrote the index, its blobs and layers not yet collected
    "commit:paused",        # a commit paused its container (its intent written), the layer not yet read
    "image:committed",      # a commit's layer, config and manifest are in the store, the index does not list them
)
# every point, each of which the chaos suite must reach
POINTS = (
    "create:intent",        # create intent and metadata written, no shim yet
    "create:launched",      # shim running, no container
    "create:created",       # container created, not started
    "create:started",       # container started, intent not yet cleared
    "create:failed",        # a step of the create failed, nothing rolled back yet
    "exec:started",         # the shim started an exec process, the manager has not answered
    "stop:signalled",       # SIGTERM sent, the grace period not yet waited
    "delete:intent",        # delete intent written
    "delete:killed",        # container killed (rm -f), not yet deleted
    "delete:shim-deleted",  # shim deleted the container and exited, files still there
    "delete:files-removed",  # everything but the metadata removed
    "restore:scanned",      # metadata read, nothing reconnected or repaired yet
    "restore:half",         # half of the containers restored
    *IMAGE_POINTS,
)

_armed = frozenset(p for p in os.environ.get("SHIMD_FAULTS", "").split(",") if p)


def point(name: str) -> None:
    if name in _armed:
        logging.getLogger("shimd.manager").warning("fault injection: dying at %s", name)
        os.kill(os.getpid(), signal.SIGKILL)
