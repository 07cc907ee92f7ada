"""``RealLittleHorse``: a real LittleHorse server and its Kafka, used like ``FakeLittleHorse``.

``env()`` and ``config()`` match the fake's, so a test can take either. All five
ports are picked once, free on loopback, and kept: ``restart_server()`` starts the
server again on the same ports and the same state dir, as a restarted pod would.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Self

from littlehorse.config import LHConfig

from fakes.lhclient import client_config, client_env
from fakes.lhserver.artifacts import Runtime, resolve_runtime, server_version
from fakes.lhserver.kafka import KafkaNode
from fakes.lhserver.server import HOST, LHServerProcess, ServerPorts
from fakes.seaweed import free_ports

START_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 30.0


class RealLittleHorse:
    """One Kafka KRaft node and one LittleHorse server under ``work_dir``.

    ``runtime`` (Java 25 and the jars) is resolved at ``start()`` when not given.
    ``extra_env`` adds or overrides ``LHS_*`` settings of the server.
    """

    host = HOST

    def __init__(
        self,
        work_dir: Path,
        *,
        runtime: Runtime | None = None,
        start_timeout_s: float = START_TIMEOUT_S,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.work_dir = work_dir
        self.runtime = runtime
        self.start_timeout_s = start_timeout_s
        self.version = server_version()
        kafka_port, controller_port, grpc, internal, health = free_ports(5)
        self.kafka = KafkaNode(work_dir, port=kafka_port, controller_port=controller_port)
        self.server = LHServerProcess(
            work_dir,
            bootstrap=self.kafka.bootstrap,
            ports=ServerPorts(grpc=grpc, internal=internal, health=health),
            extra_env=extra_env,
        )
        self.start_seconds: float | None = None  # how long the last start or restart took

    # ------------------------------------------------------------------ where it answers

    @property
    def port(self) -> int:
        """The gRPC API port."""
        return self.server.ports.grpc

    @property
    def address(self) -> str:
        """``host:port`` of the gRPC API."""
        return f"{self.host}:{self.port}"

    @property
    def health_url(self) -> str:
        """The server's ``/readiness`` URL."""
        return self.server.health_url

    @property
    def log_path(self) -> Path:
        """The server's log (Kafka's is ``kafka.log_path``)."""
        return self.server.log_path

    @property
    def pids(self) -> list[int]:
        """The pids of the JVMs running now: Kafka, then the server."""
        nodes = (self.kafka.process, self.server.process)
        return [node.pid for node in nodes if node is not None and node.running]

    def env(self) -> dict[str, str]:
        """``LHC_*`` variables pointing a worker (e.g. a subprocess) at this server."""
        return client_env(self.host, self.port)

    def config(self, **extra: str) -> LHConfig:
        """An ``LHConfig`` pointed at this server; ``extra`` adds ``LHC_``/``LHW_`` keys."""
        return client_config(self.host, self.port, **extra)

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> Self:
        """Start Kafka, then the server, and wait until it serves; on failure stop both."""
        if self.kafka.process is not None:
            raise RuntimeError("RealLittleHorse already started")
        began = time.monotonic()
        self.runtime = self.runtime or resolve_runtime()
        self.work_dir.mkdir(parents=True, exist_ok=True)
        try:
            # The server's JVM starts up while Kafka does; its Kafka clients retry meanwhile.
            self.kafka.launch(self.runtime)
            self.server.launch(self.runtime)
            self.kafka.wait_listening(self.start_timeout_s)
            self.server.wait_ready(self.start_timeout_s)
        except BaseException:
            self.stop()
            raise
        self.start_seconds = time.monotonic() - began
        return self

    def restart_server(self, *, kill: bool = False) -> None:
        """Stop only the server (SIGTERM, or SIGKILL with ``kill``) and start it again.

        Same ports, same ``LHS_STATE_DIR``, same Kafka; returns once it serves again.
        """
        began = time.monotonic()
        self.stop_server(kill=kill)
        self.start_server()
        self.start_seconds = time.monotonic() - began

    def stop_server(self, *, kill: bool = False) -> None:
        """Stop only the server, leaving Kafka up (``start_server()`` brings it back)."""
        self.server.stop(kill=kill, timeout_s=STOP_TIMEOUT_S)

    def start_server(self) -> None:
        """Start the server again after ``stop_server()``: same ports, same state dir."""
        if self.runtime is None or self.kafka.process is None:
            raise RuntimeError("RealLittleHorse not started")
        if self.server.process is not None and self.server.process.running:
            raise RuntimeError("the LittleHorse server is already running")
        self.server.start(self.runtime, self.start_timeout_s)

    def stop(self) -> None:
        """Stop the server, then Kafka (each SIGTERM, SIGKILL if it lingers). Idempotent."""
        try:
            self.server.stop(timeout_s=STOP_TIMEOUT_S)
        finally:  # even if interrupted: never leave a broker behind
            self.kafka.stop(timeout_s=STOP_TIMEOUT_S)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


@contextlib.contextmanager
def running_littlehorse(
    work_dir: Path,
    *,
    runtime: Runtime | None = None,
    start_timeout_s: float = START_TIMEOUT_S,
    extra_env: dict[str, str] | None = None,
) -> Iterator[RealLittleHorse]:
    """A started ``RealLittleHorse`` under ``work_dir``; both JVMs stopped on exit."""
    server = RealLittleHorse(
        work_dir, runtime=runtime, start_timeout_s=start_timeout_s, extra_env=extra_env
    )
    with server:
        yield server
