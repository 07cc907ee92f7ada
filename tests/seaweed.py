"""The session-wide SeaweedFS fixture (the server itself: ``fakes.seaweed``)."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from fakes.seaweed import SeaweedS3, running_seaweed


@pytest.fixture(scope="session")
def seaweed() -> Iterator[SeaweedS3]:
    """One SeaweedFS for the session (start-up takes seconds); tests use distinct prefixes."""
    data_dir = Path(tempfile.mkdtemp(prefix="seaweed-"))
    try:
        with running_seaweed(data_dir) as server:
            yield server
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
