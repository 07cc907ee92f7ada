"""The LittleHorse server JVM (``io.littlehorse.App``) for a one-node dev cluster.

Configured only through ``LHS_*`` variables (read from ``LHServerConfig`` at v1.2.1):
one partition, replication 1, small RocksDB caches, and a short Kafka Streams session
timeout so that a server killed and started again gets its partitions back in seconds
rather than after the default 60 s. Ready means ``/status`` reports the core topology
RUNNING with its tasks assigned (``/readiness`` already answers 200 while REBALANCING)
and ``Whoami`` answers: until the anonymous Principal reaches the global store, every
RPC is UNAVAILABLE "Server Initializing".
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import grpc
from google.protobuf import empty_pb2
from littlehorse.model.service_pb2_grpc import LittleHorseStub

from fakes.lhserver.artifacts import Runtime
from fakes.lhserver.process import JavaProcess, base_env

HOST = "127.0.0.1"
MAIN_CLASS = "io.littlehorse.App"
HEALTH_TIMEOUT_S = 2.0
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via *_proxy
JVM_FLAGS = ("-Xms128m", "-Xmx512m", "-XX:+UseSerialGC", "-Xss512k")
MIB = 1024 * 1024
# One node, one partition; memory knobs small enough for a test machine.
DEV_SETTINGS = {
    "LHS_CLUSTER_ID": "comfyui-dev",
    "LHS_INSTANCE_ID": "1",
    "LHS_CLUSTER_PARTITIONS": "1",
    "LHS_REPLICATION_FACTOR": "1",
    "LHS_SHOULD_CREATE_TOPICS": "true",
    "LHS_CORE_STREAM_THREADS": "1",
    "LHS_CORE_STATESTORE_CACHE_BYTES": str(8 * MIB),
    "LHS_TIMER_STATESTORE_CACHE_BYTES": str(8 * MIB),
    "LHS_CORE_MEMTABLE_SIZE_BYTES": str(8 * MIB),
    "LHS_ROCKSDB_TOTAL_BLOCK_CACHE_BYTES": str(32 * MIB),
    "LHS_ROCKSDB_TOTAL_MEMTABLE_BYTES": str(32 * MIB),
    "LHS_ROCKSDB_COMPACTION_THREADS": "1",
    # Also the EOS transaction timeout; the broker's minimum session timeout is 6 s.
    "LHS_STREAMS_SESSION_TIMEOUT": "10000",
}


@dataclass(frozen=True)
class ServerPorts:
    """The server's listeners: gRPC API, inter-instance, health/metrics."""

    grpc: int
    internal: int
    health: int


class LHServerProcess:
    """Start, wait for, and stop one ``io.littlehorse.App`` against a running Kafka."""

    def __init__(
        self,
        work_dir: Path,
        *,
        bootstrap: str,
        ports: ServerPorts,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.work_dir = work_dir
        self.bootstrap = bootstrap
        self.ports = ports
        self.extra_env = dict(extra_env or {})
        self.state_dir = work_dir / "lh-state"
        self.log_path = work_dir / "lh-server.log"
        self.process: JavaProcess | None = None

    @property
    def health_url(self) -> str:
        """The ``/readiness`` endpoint."""
        return f"http://{HOST}:{self.ports.health}/readiness"

    @property
    def status_url(self) -> str:
        """The ``/status`` endpoint (JSON: topology states, active tasks)."""
        return f"http://{HOST}:{self.ports.health}/status"

    def env(self) -> dict[str, str]:
        """The JVM's whole environment: :data:`DEV_SETTINGS`, listeners, state dir, extras."""
        return {
            **base_env(self.work_dir),
            **DEV_SETTINGS,
            "LHS_KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
            "LHS_LISTENERS": f"PLAIN:{self.ports.grpc}",
            "LHS_ADVERTISED_LISTENERS": f"PLAIN://{HOST}:{self.ports.grpc}",
            "LHS_INTERNAL_BIND_PORT": str(self.ports.internal),
            "LHS_INTERNAL_ADVERTISED_HOST": HOST,
            "LHS_INTERNAL_ADVERTISED_PORT": str(self.ports.internal),
            "LHS_HEALTH_SERVICE_PORT": str(self.ports.health),
            "LHS_STATE_DIR": str(self.state_dir),
            **self.extra_env,
        }

    def start(self, runtime: Runtime, timeout_s: float) -> None:
        """Start the JVM and wait until its core topology runs; RuntimeError with the log if not."""
        self.launch(runtime)
        self.wait_ready(timeout_s)

    def launch(self, runtime: Runtime) -> None:
        """Start the JVM (no wait); it retries Kafka until the broker answers."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.process = JavaProcess(
            "littlehorse-server",
            runtime,
            [MAIN_CLASS],
            jvm_flags=JVM_FLAGS,
            env=self.env(),
            work_dir=self.work_dir,
            log_path=self.log_path,
        )

    def wait_ready(self, timeout_s: float) -> None:
        """Wait until :meth:`is_ready`; RuntimeError with the log's tail if it exits or times out."""
        if self.process is None:
            raise RuntimeError("LittleHorse server not launched")
        self.process.wait_until(self.is_ready, timeout_s=timeout_s, what="core topology RUNNING")

    def stop(self, *, kill: bool = False, timeout_s: float = 30.0) -> None:
        """Stop the JVM: SIGTERM (a graceful Kafka Streams close) or, with ``kill``, SIGKILL."""
        if self.process is not None:
            self.process.stop(kill=kill, timeout_s=timeout_s)

    def is_ready(self) -> bool:
        """The core topology runs with its tasks and the gRPC API answers ``Whoami``."""
        if _get(self.health_url) is None:
            return False
        status = _get(self.status_url)
        if status is None:
            return False
        state = json.loads(status)
        if state.get("coreState") != "RUNNING" or not state.get("coreActiveTasks"):
            return False
        return _whoami_answers(f"{HOST}:{self.ports.grpc}")


def _whoami_answers(address: str) -> bool:
    """Whether ``Whoami`` succeeds (it needs the server's initial metadata in place)."""
    with grpc.insecure_channel(address) as channel:
        try:
            LittleHorseStub(channel).Whoami(empty_pb2.Empty(), timeout=HEALTH_TIMEOUT_S)  # type: ignore[attr-defined]
        except grpc.RpcError:
            return False
    return True


def _get(url: str) -> str | None:
    """The body of a 200 answer, None for anything else (not listening, 500, timeout)."""
    try:
        with _DIRECT.open(url, timeout=HEALTH_TIMEOUT_S) as answer:
            body: bytes = answer.read()
            return body.decode()
    except (urllib.error.URLError, OSError, ValueError):
        return None
