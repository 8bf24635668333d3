"""CRI: the gRPC runtime service and the streaming server behind its Exec, Attach and PortForward URLs."""
