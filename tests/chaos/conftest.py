"""The chaos report is written once the session is over (the soak and the planted-bug tests have all run)."""

from __future__ import annotations

import os

import pytest

from tests.chaos import report


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    path = os.environ.get("CHAOS_REPORT")
    if path and (report.RESULTS.chaos is not None or report.RESULTS.planted):
        report.write(path)
