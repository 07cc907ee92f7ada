"""The session-wide SeaweedFS fixture (the server itself: ``fakes.seaweed``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from fakes.seaweed import SeaweedS3, running_seaweed


@pytest.fixture(scope="session")
def seaweed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedS3]:
    """One SeaweedFS for the session (start-up takes seconds); tests use distinct prefixes."""
    with running_seaweed(tmp_path_factory.mktemp("seaweed")) as server:
        yield server
