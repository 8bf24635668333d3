"""The container's I/O as the shim owns it: stdio FIFOs, the copy loop into the log, and the CRI log itself."""
