"""The fake ComfyUI in its own process, so its CPU and memory never count as the worker's.

The child (``python -m benchmarks.fakeproc ROOT``) prints one JSON line with its URL,
then answers JSON-line requests on stdin/stdout: ``times`` (its ``received_times``,
``started_times`` and ``finish_times`` for some prompt ids), ``received`` (when one
prompt arrived, or null), ``set`` (a control such as
``execution_time_s``) and ``now`` (its ``time.monotonic()``). Linux's CLOCK_MONOTONIC is
one clock for every process on the host, so those times compare directly with the
worker's ``time.monotonic()``; ``clock_check`` verifies it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from benchmarks.common import ROOT

SETTABLE = ("execution_time_s", "history_delay_s")


@dataclass(frozen=True)
class PromptTimes:
    """When the fake accepted, started and finished one prompt (monotonic seconds)."""

    received: float
    started: float
    finished: float


class FakeProcess:
    """Parent-side handle of the fake ComfyUI child process."""

    def __init__(self, root: Path, log_path: Path) -> None:
        self.root = root
        self.log_path = log_path
        self._log: IO[bytes] | None = None
        self._proc: subprocess.Popen[str] | None = None
        self._lock = threading.Lock()
        self.base_url = ""
        self.pid = 0

    def start(self) -> FakeProcess:
        """Spawn the child and wait for its URL."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("ab")
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.fakeproc", str(self.root)],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            bufsize=1,
        )
        hello = self._read()
        self.base_url, self.pid = str(hello["base_url"]), int(hello["pid"])
        return self

    def stop(self) -> None:
        """Close the control pipe (the child exits on EOF) and reap it."""
        proc, self._proc = self._proc, None
        if proc is not None:
            if proc.stdin is not None:
                proc.stdin.close()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
            if proc.stdout is not None:
                proc.stdout.close()
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> FakeProcess:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # --- requests -----------------------------------------------------------------------

    def call(self, op: str, **args: Any) -> Any:
        """Send one request and return the child's answer."""
        with self._lock:
            if self._proc is None or self._proc.stdin is None:
                raise RuntimeError("fake ComfyUI process is not running")
            self._proc.stdin.write(json.dumps({"op": op, **args}) + "\n")
            self._proc.stdin.flush()
            return self._read()["result"]

    def set(self, name: str, value: float) -> None:
        """Set a control of the fake (``execution_time_s``, ``history_delay_s``)."""
        self.call("set", name=name, value=value)

    def times(self, prompt_ids: list[str], timeout_s: float = 10.0) -> dict[str, PromptTimes]:
        """Received/started/finished times of each prompt (waits until all finished)."""
        deadline = time.monotonic() + timeout_s
        while True:
            raw: dict[str, list[float]] = self.call("times", prompt_ids=prompt_ids)
            if len(raw) == len(set(prompt_ids)) or time.monotonic() > deadline:
                break
            time.sleep(0.01)
        missing = set(prompt_ids) - set(raw)
        if missing:
            raise RuntimeError(f"fake ComfyUI has no finish time for {sorted(missing)[:3]}")
        return {pid: PromptTimes(*values) for pid, values in raw.items()}

    def wait_received(self, prompt_id: str, timeout_s: float = 30.0) -> float:
        """When the fake accepted ``prompt_id`` (waits until it has)."""
        deadline = time.monotonic() + timeout_s
        while (received := self.call("received", prompt_id=prompt_id)) is None:
            if time.monotonic() > deadline:
                raise RuntimeError(f"fake ComfyUI never received {prompt_id}")
            time.sleep(0.005)
        return float(received)

    def clock_check(self, rounds: int = 20) -> float:
        """Largest distance (s) of the child's monotonic clock outside our round trip.

        0.0 means every child reading fell between the parent's before and after
        readings: the two processes share one clock.
        """
        worst = 0.0
        for _ in range(rounds):
            before = time.monotonic()
            theirs = float(self.call("now"))
            after = time.monotonic()
            worst = max(worst, before - theirs, theirs - after)
        return worst

    def _read(self) -> dict[str, Any]:
        assert self._proc is not None and self._proc.stdout is not None
        line = self._proc.stdout.readline()
        if not line:
            raise RuntimeError(f"fake ComfyUI process died; see {self.log_path}")
        answer: dict[str, Any] = json.loads(line)
        if "error" in answer:
            raise RuntimeError(f"fake ComfyUI control: {answer['error']}")
        return answer


# --- child ------------------------------------------------------------------------------


def _serve(root: Path) -> int:
    from fakes.comfyui import FakeComfyUI

    with FakeComfyUI(root) as fake:
        print(json.dumps({"base_url": fake.base_url, "pid": _pid()}), flush=True)
        for line in sys.stdin:
            if not line.strip():
                continue
            try:
                print(json.dumps({"result": _answer(fake, json.loads(line))}), flush=True)
            except Exception as exc:
                print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}), flush=True)
    return 0


def _answer(fake: Any, request: dict[str, Any]) -> Any:
    op = request["op"]
    if op == "now":
        return time.monotonic()
    if op == "set":
        if request["name"] not in SETTABLE:
            raise ValueError(f"cannot set {request['name']!r}")
        setattr(fake, request["name"], float(request["value"]))
        return None
    if op == "received":
        return fake.received_times.get(request["prompt_id"])
    if op == "times":
        finished, started, received = fake.finish_times, fake.started_times, fake.received_times
        return {
            pid: [received[pid], started[pid], finished[pid]]
            for pid in request["prompt_ids"]
            if pid in finished and pid in started and pid in received
        }
    raise ValueError(f"unknown op {op!r}")


def _pid() -> int:
    import os

    return os.getpid()


if __name__ == "__main__":
    raise SystemExit(_serve(Path(sys.argv[1])))
