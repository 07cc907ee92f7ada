"""The worker side of items 3 and 4, run as its own process so its RSS and CPU are its own.

``python -m benchmarks.worker_side download|idle --base-url URL --out DIR ...`` prints
one JSON object on stdout; logs go to stderr at WARNING.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from benchmarks.common import (
    MIB,
    batch_graph,
    big_graph,
    proc_status_kib,
    reset_peak_rss,
    settings_for,
    sleep_graph,
    smoke_graph,
)
from comfyui_worker import logs
from comfyui_worker.execution import Runner, RunRequest


def _run(runner: Runner, graph: dict[str, Any], key: str) -> tuple[dict[str, Any], float]:
    start = time.monotonic()
    result = runner.run(RunRequest(graph=graph, prompt_id=str(uuid.uuid4()), run_key=key))
    return result, time.monotonic() - start


def _warm(runner: Runner) -> None:
    """One small task first: connections, object_info cache, lazy imports."""
    _run(runner, smoke_graph(int(time.time() * 1000) & 0xFFFFFF, "bench/warm"), "warm")


def _raw_view(base_url: str, ref: dict[str, Any]) -> tuple[int, float]:
    """Stream /view with plain httpx into /dev/null: the practical ceiling here."""
    params = {"filename": ref["filename"], "subfolder": ref["subfolder"], "type": "output"}
    size = 0
    with (
        httpx.Client(base_url=base_url, timeout=60) as http,
        open(os.devnull, "wb") as sink,
    ):
        start = time.monotonic()
        with http.stream("GET", "/view", params=params) as response:
            response.raise_for_status()
            for chunk in response.iter_bytes():
                size += len(chunk)
                sink.write(chunk)
        return size, time.monotonic() - start


def download(base_url: str, out: Path, size: int, small: int) -> dict[str, Any]:
    """1 big FakeBigOutput through Runner.run (fsync on, then off) vs raw httpx; N small."""
    report: dict[str, Any] = {"size_bytes": size}
    for fsync in (True, False):
        label = "fsync" if fsync else "nofsync"
        settings = settings_for(base_url, out / label, COMFYUI_FSYNC=str(fsync).lower())
        with Runner(settings) as runner:
            _warm(runner)
            rss_before = proc_status_kib("VmRSS")
            peak_reset = reset_peak_rss()
            hwm_before = proc_status_kib("VmHWM")
            result, wall = _run(runner, big_graph(size, f"bench/big-{label}"), f"big-{label}")
            hwm_after = proc_status_kib("VmHWM")
            [saved] = result["outputs"]
            assert saved["size_bytes"] == size, saved
            download_s = result["timings_ms"]["downloading"] / 1000
            report[f"big_{label}"] = {
                "wall_s": wall,
                "download_s": download_s,
                "mb_per_s": size / download_s / 1e6,
                "rss_before_mib": rss_before / 1024,
                "rss_growth_mib": (hwm_after - (hwm_before if peak_reset else rss_before)) / 1024,
                "peak_reset": float(peak_reset),
            }
            if fsync:
                raw = [_raw_view(base_url, saved) for _ in range(2)]
                assert all(n == size for n, _ in raw), raw
                raw_s = sum(s for _, s in raw) / len(raw)
                report["raw_httpx"] = {"download_s": raw_s, "mb_per_s": size / raw_s / 1e6}
            shutil.rmtree(out / label, ignore_errors=True)
            result, wall = _run(runner, batch_graph(small, 0x405060 + fsync, f"bench/small-{label}"), f"small-{label}")
            assert len(result["outputs"]) == small
            download_s = result["timings_ms"]["downloading"] / 1000
            report[f"small_{label}"] = {
                "files": small,
                "wall_s": wall,
                "download_s": download_s,
                "files_per_s": small / max(download_s, 1e-3),
            }
            shutil.rmtree(out / label, ignore_errors=True)
    report["ratio_to_raw"] = report["big_fsync"]["mb_per_s"] / report["raw_httpx"]["mb_per_s"]
    return report


def idle(base_url: str, out: Path, seconds: float) -> dict[str, Any]:
    """CPU the worker process burns while Runner.run waits on a ``seconds`` execution."""
    settings = settings_for(base_url, out)
    with Runner(settings) as runner:
        _warm(runner)
        cpu_before, wall_before = _cpu_s(), time.monotonic()
        result, _ = _run(runner, sleep_graph(0x708090, seconds, "bench/idle"), "idle")
        cpu, wall = _cpu_s() - cpu_before, time.monotonic() - wall_before
    shutil.rmtree(out, ignore_errors=True)
    return {
        "execution_s": result["timings_ms"]["comfy_execution"] / 1000,
        "wall_s": wall,
        "cpu_s": cpu,
        "cpu_pct_of_core": 100 * cpu / wall,
        "poll_interval_s": settings.poll_interval_s,
    }


def _cpu_s() -> float:
    times = os.times()
    return times.user + times.system


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.worker_side")
    parser.add_argument("what", choices=("download", "idle"))
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--size", type=int, default=1024 * MIB)
    parser.add_argument("--small", type=int, default=500)
    parser.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args(argv)
    logs.configure("warning")
    if args.what == "download":
        report = download(args.base_url, args.out, args.size, args.small)
    else:
        report = idle(args.base_url, args.out, args.seconds)
    json.dump(report, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
