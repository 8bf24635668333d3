"""The chaos report is written once the session is over (the soak and the planted-bug tests have all run)."""

from __future__ import annotations

import os
import shutil
import tempfile

import pytest

from tests.chaos import report
from tests.chaos.imageops import build_archive


@pytest.fixture(scope="session")
def chaos_archive():
    """The small archive the chaos rounds import, built once per session (umoci, skopeo: no registry)."""
    work = tempfile.mkdtemp(prefix="shimd-chaos-img-")
    try:
        yield build_archive(work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    path = os.environ.get("CHAOS_REPORT")
    if path and (report.RESULTS.chaos is not None or report.RESULTS.planted):
        report.write(path)
