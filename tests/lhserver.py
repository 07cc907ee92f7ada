"""The session-wide real LittleHorse fixture ``real_lh`` (the launcher: ``fakes.lhserver``).

One Kafka plus one LittleHorse server 1.2.1 for the whole session: a cold start takes
about 12-15 s (plus a one-time Maven download into ``.cache/``), so tests share it and
keep apart by unique names and ids. A test may ``restart_server()`` it; it serves again
on the same address when that returns.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from fakes.lhserver import RealLittleHorse, running_littlehorse


@pytest.fixture(scope="session")
def real_lh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealLittleHorse]:
    """A real LittleHorse for the session, its state in pytest's temporary directory."""
    with running_littlehorse(tmp_path_factory.mktemp("lhserver")) as server:
        yield server
