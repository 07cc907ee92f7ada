"""A real LittleHorse server (1.2.1, from Maven Central) and its Kafka, started without Docker.

``running_littlehorse(work_dir)`` or ``RealLittleHorse(work_dir).start()``; both mirror
``FakeLittleHorse.env()``/``config()``. ``python -m fakes.lhserver`` runs one by hand.
"""

from fakes.lhserver.artifacts import Runtime, ensure_jars, find_java, resolve_runtime
from fakes.lhserver.cluster import RealLittleHorse, running_littlehorse

__all__ = [
    "RealLittleHorse",
    "Runtime",
    "ensure_jars",
    "find_java",
    "resolve_runtime",
    "running_littlehorse",
]
