"""One Kafka KRaft node (broker and controller in one JVM) on loopback ports, for one LittleHorse.

Every internal topic has replication factor 1 and the group coordinator does not wait
before the first rebalance, so the server's Kafka Streams start at once. The log dir is
formatted only the first time (a ``meta.properties`` says it was).
"""

from __future__ import annotations

import base64
import socket
import uuid
from pathlib import Path

from fakes.lhserver.artifacts import Runtime
from fakes.lhserver.process import JavaProcess, base_env, run_java

HOST = "127.0.0.1"
FORMAT_TIMEOUT_S = 120.0
# Kafka is idle apart from one LittleHorse: a small heap, few threads, serial GC.
JVM_FLAGS = ("-Xms64m", "-Xmx384m", "-XX:+UseSerialGC", "-Xss512k")
SINGLE_NODE_SETTINGS = {
    "process.roles": "broker,controller",
    "node.id": "1",
    "controller.listener.names": "CONTROLLER",
    "inter.broker.listener.name": "PLAINTEXT",
    "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
    "num.partitions": "1",
    "default.replication.factor": "1",
    "min.insync.replicas": "1",
    "offsets.topic.replication.factor": "1",
    "offsets.topic.num.partitions": "1",
    "transaction.state.log.replication.factor": "1",
    "transaction.state.log.min.isr": "1",
    "transaction.state.log.num.partitions": "1",
    "share.coordinator.state.topic.replication.factor": "1",
    "share.coordinator.state.topic.min.isr": "1",
    "group.initial.rebalance.delay.ms": "0",
    "num.network.threads": "2",
    "num.io.threads": "2",
    "background.threads": "2",
    "log.cleaner.threads": "1",
    "auto.create.topics.enable": "false",
}


class KafkaNode:
    """A single-node KRaft cluster: ``launch()`` formats (once) and starts it, then ``wait_listening()``."""

    def __init__(self, work_dir: Path, *, port: int, controller_port: int) -> None:
        self.work_dir = work_dir
        self.port = port
        self.controller_port = controller_port
        self.log_dir = work_dir / "kafka-data"
        self.config_path = work_dir / "kafka.properties"
        self.log_path = work_dir / "kafka.log"
        self.process: JavaProcess | None = None

    @property
    def bootstrap(self) -> str:
        """``host:port`` of the broker listener."""
        return f"{HOST}:{self.port}"

    def settings(self) -> dict[str, str]:
        """The broker's properties: :data:`SINGLE_NODE_SETTINGS` plus listeners and log dir."""
        return {
            **SINGLE_NODE_SETTINGS,
            "controller.quorum.voters": f"1@{HOST}:{self.controller_port}",
            "listeners": f"PLAINTEXT://{self.bootstrap},CONTROLLER://{HOST}:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://{self.bootstrap}",
            "log.dirs": str(self.log_dir),
        }

    def launch(self, runtime: Runtime) -> None:
        """Write the properties, format the log dir if new, and start the JVM (no wait)."""
        self.work_dir.mkdir(parents=True, exist_ok=True)
        lines = (f"{key}={value}" for key, value in self.settings().items())
        self.config_path.write_text("\n".join(lines) + "\n")
        if not (self.log_dir / "meta.properties").is_file():
            self._format(runtime)
        self.process = JavaProcess(
            "kafka",
            runtime,
            ["kafka.Kafka", str(self.config_path)],
            jvm_flags=JVM_FLAGS,
            env=base_env(self.work_dir),
            work_dir=self.work_dir,
            log_path=self.log_path,
        )

    def wait_listening(self, timeout_s: float) -> None:
        """Wait until the broker port accepts connections; RuntimeError with the log if not."""
        if self.process is None:
            raise RuntimeError("Kafka not launched")
        self.process.wait_until(self._accepts, timeout_s=timeout_s, what="broker listening")

    def stop(self, timeout_s: float = 30.0) -> None:
        """Stop the broker (SIGTERM, SIGKILL if it lingers)."""
        if self.process is not None:
            self.process.stop(timeout_s=timeout_s)

    def _format(self, runtime: Runtime) -> None:
        """``StorageTool format`` with a fresh cluster id (22 characters of URL-safe base64)."""
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        main = ["kafka.tools.StorageTool", "format", f"--cluster-id={cluster_id}"]
        main += ["--config", str(self.config_path)]  # the "=" form: an id may start with "-"
        run_java(
            runtime,
            main,
            work_dir=self.work_dir,
            log_path=self.log_path,
            timeout_s=FORMAT_TIMEOUT_S,
        )

    def _accepts(self) -> bool:
        try:
            socket.create_connection((HOST, self.port), timeout=1).close()
        except OSError:
            return False
        return True
