"""The LittleHorse a scenario runs against: ``littlehorse`` runs each test on both servers.

``[fake]`` gets a fresh ``FakeLittleHorse`` (timeouts and backoff 10x shorter), ``[real]``
the session's real server (``real_lh``) in a tenant of its own, so tests sharing the
server never see each other's work. What only the fake can do (drop a stream, expire an
attempt on demand) stays in the fake-only tests.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from fakes.lhserver import RealLittleHorse
from fakes.littlehorse import FakeLittleHorse
from fakes.littlehorses import LittleHorseUnderTest, new_tenant


@pytest.fixture(params=["fake", "real"])
def littlehorse(request: pytest.FixtureRequest) -> Iterator[LittleHorseUnderTest]:
    """The scenario's LittleHorse: a fresh fake (timeouts and backoff 10x shorter), or the
    session's real server in a tenant of this test's own."""
    if request.param == "fake":
        with FakeLittleHorse(time_scale=0.1) as fake:
            under_test = LittleHorseUnderTest("fake", fake)
            yield under_test
            under_test.close()
        return
    real: RealLittleHorse = request.getfixturevalue("real_lh")
    under_test = LittleHorseUnderTest("real", real, new_tenant(real))
    yield under_test
    under_test.close()
