"""One Java process in its own process group, logging to a file; condition waits with a deadline."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from fakes.lhserver.artifacts import Runtime

POLL_INTERVAL_S = 0.1
LOG_TAIL_CHARS = 4000
# Java 25 warns on stderr about JNI (RocksDB, lz4) and sun.misc.Unsafe (Kafka, Netty) otherwise.
QUIET_JVM_FLAGS = (
    "--enable-native-access=ALL-UNNAMED",
    "--sun-misc-unsafe-memory-access=allow",
    "-Djava.awt.headless=true",
    "-XX:+ExitOnOutOfMemoryError",
)


class JavaProcess:
    """A ``java -cp <jars> <main>`` child with its own session, so a stop reaches its children."""

    def __init__(
        self,
        name: str,
        runtime: Runtime,
        main: Sequence[str],
        *,
        jvm_flags: Sequence[str],
        env: Mapping[str, str],
        work_dir: Path,
        log_path: Path,
    ) -> None:
        self.name = name
        self.log_path = log_path
        tmp_dir = work_dir / "tmp"  # RocksDB unpacks its native library here on every start
        tmp_dir.mkdir(parents=True, exist_ok=True)
        args = [
            str(runtime.java),
            *QUIET_JVM_FLAGS,
            *class_data_sharing(runtime, name),
            f"-Djava.io.tmpdir={tmp_dir}",
            *jvm_flags,
            "-cp",
            runtime.classpath,
            *main,
        ]
        with log_path.open("ab") as log:
            log.write(f"--- {time.strftime('%H:%M:%S')} start {name}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                args,
                cwd=work_dir,
                env=dict(env),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    @property
    def pid(self) -> int:
        """The JVM's pid (also its process group id)."""
        return self.proc.pid

    @property
    def running(self) -> bool:
        """Whether the JVM has not exited."""
        return self.proc.poll() is None

    def stop(self, *, kill: bool = False, timeout_s: float = 30.0) -> int:
        """SIGTERM the group (SIGKILL if ``kill`` or if it lingers), wait, return the exit code."""
        if self.running:
            _signal_group(self.pid, signal.SIGKILL if kill else signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                _signal_group(self.pid, signal.SIGKILL)
                self.proc.wait(timeout=timeout_s)
        _signal_group(self.pid, signal.SIGKILL)  # whatever the JVM left in its group
        return self.proc.returncode

    def wait_until(self, ready: Callable[[], bool], *, timeout_s: float, what: str) -> None:
        """Poll ``ready`` until it holds; RuntimeError with the log's tail on exit or deadline."""
        deadline = time.monotonic() + timeout_s
        while not ready():
            if not self.running:
                raise RuntimeError(
                    f"{self.name} exited {self.proc.returncode} before {what}; "
                    f"{self.log_path}:\n{log_tail(self.log_path)}"
                )
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"{self.name}: no {what} after {timeout_s:g} s; "
                    f"{self.log_path}:\n{log_tail(self.log_path)}"
                )
            time.sleep(POLL_INTERVAL_S)


def class_data_sharing(runtime: Runtime, name: str) -> list[str]:
    """Flags for a class-data archive per JVM kind, written at the first clean exit.

    Mapping the loaded classes instead of parsing them cuts ~2 s off each JVM's start.
    The JVM checks the archive against its own build and the classpath, and writes a
    new one when they do not match. Its ``[cds]`` log lines are off: Java 25 reports a
    harmless mismatch of ``--enable-native-access`` with its base archive on every start.
    """
    runtime.cds_dir.mkdir(parents=True, exist_ok=True)
    archive = runtime.cds_dir / f"{name}.jsa"
    return ["-XX:+AutoCreateSharedArchive", f"-XX:SharedArchiveFile={archive}", "-Xlog:cds=off"]


def log_tail(path: Path, chars: int = LOG_TAIL_CHARS) -> str:
    """The last ``chars`` characters of a log file (empty if there is none)."""
    with contextlib.suppress(OSError), path.open("rb") as log:
        log.seek(0, os.SEEK_END)
        log.seek(max(0, log.tell() - chars))
        return log.read().decode(errors="replace")
    return ""


def run_java(
    runtime: Runtime, main: Sequence[str], *, work_dir: Path, log_path: Path, timeout_s: float
) -> None:
    """Run a short Java tool to completion, its output appended to ``log_path``."""
    with log_path.open("ab") as log:
        done = subprocess.run(
            [str(runtime.java), *QUIET_JVM_FLAGS, "-cp", runtime.classpath, *main],
            cwd=work_dir,
            env=base_env(work_dir),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            timeout=timeout_s,
            check=False,
        )
    if done.returncode != 0:
        raise RuntimeError(
            f"{' '.join(main[:2])} exited {done.returncode}; {log_path}:\n{log_tail(log_path)}"
        )


def base_env(work_dir: Path) -> dict[str, str]:
    """A minimal environment for a JVM: no ``LHS_*``/``KAFKA_*`` leaks from the caller."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(work_dir),
        "LANG": "C.UTF-8",
    }


def _signal_group(pgid: int, signum: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)
