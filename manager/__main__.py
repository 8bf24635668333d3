"""shimd-manager: argv -> config -> serve in the foreground."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from .config import ConfigError, load
from .daemon import AlreadyRunning, serve


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="shimd-manager", description="the shimd container manager")
    ap.add_argument("--config", default=None, help="TOML configuration (default /etc/shimd/config.toml if present)")
    ap.add_argument("--root", default=None, help="persistent state (default /var/lib/shimd)")
    ap.add_argument("--state", default=None, help="runtime state and the API socket (default /run/shimd)")
    ap.add_argument("--runtime", default=None, help="OCI runtime binary (default runc)")
    ap.add_argument("--debug", action="store_true")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if a.debug else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        cfg = load(a.config, {"root": a.root, "state": a.state, "runtime": a.runtime})
        return asyncio.run(serve(cfg))
    except (AlreadyRunning, ConfigError, OSError, KeyError) as e:
        print(f"shimd-manager: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
