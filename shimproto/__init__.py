"""The wire protocol shared by the manager, the shim and the CLI.

Owns: message framing (msgpack over ZeroMQ), the error codes and their exception classes, the exit-status model,
container id rules, and the request/reply client and server used on both hops (CLI -> manager -> shim).
Imports nothing else of ours.
"""
