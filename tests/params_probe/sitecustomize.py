"""A probe for tests/test_fuzz.py's drift test, loaded by every Python process started with this directory first
on PYTHONPATH and SHIMD_PARAMS_PROBE naming a file: each parameter a request handler reads from its request (through
shimproto.wire.Params, or the raw map) is appended to that file as "<server>\t<label>\t<name>", where server is the
package the process runs (manager, shimd) and label is the method ("create", or "create: spec" for a name read in
a map the request carries). A name looked for and found absent counts as read: the handler knows it. Only the
params the RPC server decodes are watched, not a Params a handler builds for itself."""

import os

_PATH = os.environ.get("SHIMD_PARAMS_PROBE")

if _PATH:
    import sys

    from shimproto import wire

    def _record(label: str, name: object) -> None:
        server = os.path.basename(os.path.dirname(os.path.abspath(sys.argv[0]))) if sys.argv and sys.argv[0] else "?"
        fd = os.open(_PATH, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, f"{server}\t{label}\t{name}\n".encode(errors="replace"))
        finally:
            os.close(fd)

    class _Recorded(dict):
        """A request's params map that records every name looked up in it (and watches the maps inside it)."""

        label = ""

        def _inner(self, k: object, v: object) -> object:
            if type(v) is dict:
                v = _Recorded(v)
                v.label = f"{self.label}: {k}"
            return v

        def __getitem__(self, k):  # type: ignore[no-untyped-def]
            _record(self.label, k)
            return self._inner(k, super().__getitem__(k))

        def get(self, k, default=None):  # type: ignore[no-untyped-def]
            _record(self.label, k)
            return self._inner(k, super().get(k, default))

        def __contains__(self, k):  # type: ignore[no-untyped-def]
            _record(self.label, k)
            return super().__contains__(k)

    _init = wire.Params.__init__

    def _probed_init(self, method, raw):  # type: ignore[no-untyped-def]
        if type(raw) is dict and sys._getframe(1).f_code.co_filename.endswith(os.path.join("shimproto", "rpc.py")):
            raw = _Recorded(raw)
            raw.label = method
        _init(self, method, raw)

    wire.Params.__init__ = _probed_init  # type: ignore[method-assign]
