"""shimd-manager: argv -> config -> serve in the foreground."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys

from .daemon import AlreadyRunning, Config, serve


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="shimd-manager", description="the shimd container manager")
    ap.add_argument("--root", default="/var/lib/shimd", help="persistent state (default %(default)s)")
    ap.add_argument("--state", default="/run/shimd", help="runtime state and the API socket (default %(default)s)")
    ap.add_argument("--runtime", default="runc", help="OCI runtime binary (default %(default)s)")
    ap.add_argument("--debug", action="store_true")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if a.debug else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    cfg = Config(root=os.path.abspath(a.root), state=os.path.abspath(a.state), runtime=a.runtime)
    try:
        return asyncio.run(serve(cfg))
    except AlreadyRunning as e:
        print(f"shimd-manager: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"shimd-manager: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
