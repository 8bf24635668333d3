"""The daemon: API server, registry of containers, shim launcher, restore on start, sd_notify.

Never mounts, never runs the OCI runtime, never waits on container processes: those belong to the shims. Imports
only the protocol package of ours.
"""
