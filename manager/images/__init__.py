"""Images: the content store under <root>/images/ (content.py), the layer unpacker (unpack.py), OCI layouts in and
out (oci.py), references (reference.py), a pull's or import's states (pull.py), the service the commands call
(service.py), an image config applied to a spec (config.py), and the built-in busybox (builtin.py)."""

from __future__ import annotations

from .builtin import BUILTIN, resolve

__all__ = ["BUILTIN", "resolve"]
