"""The per-container shim: detaches from the manager, becomes child subreaper, owns the container's stdio, log,
mounts and exit status, drives the OCI runtime and serves the shim API over ZeroMQ.

Nothing happens at import time: a process that has imported this package can fork shims cheaply.
"""
