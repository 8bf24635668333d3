"""Build what some tests need and cache across runs, ahead of the suite: `python -m tests.prebuild`.

scripts/test runs this in the background beside crictl's build when it runs the whole suite, so that no test's
set-up pays for it on a new machine: the systemd test's image (debootstrap and a venv, about 100 s) and the CRI
tests' stand-in images (about 25 s). Each is built as its test would build it (same cache, same keys; the CRI
images under their lock); what fails here is only reported, and left to its tests to fail on.
"""

from __future__ import annotations

import sys
import time
import traceback


def main() -> int:
    from tests import cri_images, systemd_image

    failed = 0
    for name, build in (("systemd image", lambda: systemd_image.image_tarball(print)),
                        ("CRI images", cri_images.ensure_images)):
        t0 = time.monotonic()
        try:
            print(f"{name}: {build()} ({time.monotonic() - t0:.0f}s)", flush=True)
        except Exception as e:  # noqa: BLE001 - reported; the tests that need it say the rest
            traceback.print_exc()
            print(f"{name}: not built: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}", flush=True)
            failed += 1
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
