"""The worker side of items 3 and 4, run as its own process so its RSS and CPU are its own.

``python -m benchmarks.worker_side download|idle --base-url URL --out DIR ...`` prints
one JSON object on stdout; logs go to stderr at WARNING.
"""

from __future__ import annotations

import argparse
import json
import mmap
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
    peak_rss_growth,
    proc_status_kib,
    settings_for,
    sleep_graph,
    smoke_graph,
)
from comfyui_worker import logs
from comfyui_worker.result import RunResult
from comfyui_worker.run.execution import Runner
from comfyui_worker.workflow.request import RunRequest


def _run(runner: Runner, graph: dict[str, Any], key: str) -> tuple[RunResult, float]:
    start = time.monotonic()
    result = runner.run(RunRequest(graph=graph, prompt_id=str(uuid.uuid4()), run_key=key))
    return result, time.monotonic() - start


def _warm(runner: Runner) -> None:
    """One small task first: connections, object_info cache, lazy imports."""
    _run(runner, smoke_graph(int(time.time() * 1000) & 0xFFFFFF, "bench/warm"), "warm")


class Download:
    """Item 3 in this process: big output via Runner.run vs raw httpx vs a plain write.

    Throughputs are the best of ``rounds`` (noise only ever slows a transfer down); the
    RSS growth is the worst round. Every measured write starts from the same state: no
    dirty pages (``os.sync``) and, after ``settle_s``, memory settled: on a VM whose
    balloon takes back freed pages, each round then pays the same first-touch cost for
    fresh page cache, the plain disk check included.
    """

    def __init__(self, base_url: str, out: Path, size: int, rounds: int, settle_s: float) -> None:
        self.base_url = base_url
        self.out = out
        self.size = size
        self.rounds = rounds
        self.settle_s = settle_s

    def run(self, small: int) -> dict[str, Any]:
        self.settle()
        report: dict[str, Any] = {
            "size_bytes": self.size,
            "rounds": self.rounds,
            "settle_s": self.settle_s,
            "fresh_memory_touch_mb_per_s": _fresh_memory_touch(self.size),
            "disk_write": self.disk_write(),
        }
        for fsync in (True, False):
            label = "fsync" if fsync else "nofsync"
            run_dir = self.out / label
            settings = settings_for(self.base_url, run_dir, COMFYUI_FSYNC=str(fsync).lower())
            with Runner(settings) as runner:
                _warm(runner)
                runs = [self.big_once(runner, run_dir, f"{label}-{i}") for i in range(self.rounds)]
                best = max(runs, key=lambda run: float(run[0]["mb_per_s"]))[0]
                best["rss_growth_mib"] = max(float(run[0]["rss_growth_mib"]) for run in runs)
                report[f"big_{label}"] = best
                if fsync:
                    report["raw_httpx"] = self.raw_view(runs[0][1])
                report[f"small_{label}"] = self.small_once(runner, run_dir, small, label)
        worker = report["big_fsync"]["mb_per_s"]
        report["ratio_to_raw_pct"] = 100 * worker / report["raw_httpx"]["mb_per_s"]
        report["ratio_to_disk_write_pct"] = 100 * worker / report["disk_write"]["mb_per_s"]
        return report

    def big_once(
        self, runner: Runner, run_dir: Path, key: str
    ) -> tuple[dict[str, float], dict[str, Any]]:
        """One big download: figures, and the output's reference (for the raw comparison)."""
        self.settle()
        rss_before = proc_status_kib("VmRSS")
        growth_mib = peak_rss_growth()
        cpu_before = os.times()
        result, wall = _run(runner, big_graph(self.size, "bench/big"), key)
        cpu_after = os.times()
        rss_growth_mib = growth_mib()
        saved = result.outputs[0]
        _check(saved.size_bytes == self.size, f"saved {saved.size_bytes} bytes")
        download_s = result.timings_ms.downloading / 1000
        _remove(run_dir)
        figures = {
            "wall_s": wall,
            "download_s": download_s,
            "mb_per_s": self.size / download_s / 1e6,
            "rss_before_mib": rss_before / 1024,
            "rss_growth_mib": rss_growth_mib,
            "cpu_user_s": cpu_after.user - cpu_before.user,
            "cpu_sys_s": cpu_after.system - cpu_before.system,
        }
        return figures, saved.model_dump()

    def small_once(self, runner: Runner, run_dir: Path, count: int, label: str) -> dict[str, float]:
        """One prompt with ``count`` small PNG outputs."""
        self.settle()
        graph = batch_graph(count, 0x405060 + len(label), f"bench/small-{label}")
        result, wall = _run(runner, graph, f"small-{label}")
        saved = len(result.outputs)
        _check(saved == count, f"{saved} of {count} files saved")
        download_s = result.timings_ms.downloading / 1000
        _remove(run_dir)
        return {
            "files": count,
            "wall_s": wall,
            "download_s": download_s,
            "files_per_s": count / max(download_s, 1e-3),
        }

    def raw_view(self, ref: dict[str, Any]) -> dict[str, float]:
        """Stream /view with plain httpx into /dev/null: the practical ceiling here."""
        params = {"filename": ref["filename"], "subfolder": ref["subfolder"], "type": "output"}
        took = []
        with (
            httpx.Client(base_url=self.base_url, timeout=60) as http,
            open(os.devnull, "wb") as sink,
        ):
            for _ in range(self.rounds):
                received = 0
                start = time.monotonic()
                with http.stream("GET", "/view", params=params) as response:
                    response.raise_for_status()
                    for chunk in response.iter_bytes():
                        received += len(chunk)
                        sink.write(chunk)
                took.append(time.monotonic() - start)
                _check(received == self.size, f"raw /view gave {received} bytes")
        return {"download_s": min(took), "mb_per_s": self.size / min(took) / 1e6}

    def disk_write(self) -> dict[str, float]:
        """Plain 1 MiB writes of the same size plus one fsync: what the disk allows."""
        directory = self.out / "disk-check"
        block = os.urandom(MIB)
        best: dict[str, float] = {}
        for _ in range(self.rounds):
            directory.mkdir(parents=True, exist_ok=True)
            self.settle()
            start = time.monotonic()
            with (directory / "disk-check.bin").open("wb") as sink:
                for offset in range(0, self.size, MIB):
                    sink.write(block[: min(MIB, self.size - offset)])
                written = time.monotonic()
                sink.flush()
                os.fsync(sink.fileno())
            end = time.monotonic()
            _remove(directory)
            if not best or end - start < best["write_s"] + best["fsync_s"]:
                best = {"write_s": written - start, "fsync_s": end - written}
        best["mb_per_s"] = self.size / (best["write_s"] + best["fsync_s"]) / 1e6
        return best

    def settle(self) -> None:
        os.sync()
        time.sleep(self.settle_s)


def _fresh_memory_touch(size: int) -> float:
    """How fast this host hands out ``size`` bytes of fresh memory (MB/s).

    Slow on VMs whose balloon reclaims free memory (the hypervisor backs it again on
    first touch): writing a new file of that size then pays it for every page-cache
    page, whatever the downloader does. A small size would only measure the pool the
    guest kept, so this touches as much as the download writes.
    """
    area = mmap.mmap(-1, size)
    try:
        start = time.monotonic()
        for offset in range(0, size, mmap.PAGESIZE):
            area[offset] = 1
        took = time.monotonic() - start
    finally:
        area.close()
    return size / took / 1e6


def _remove(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
    os.sync()


def _check(ok: bool, what: str) -> None:
    if not ok:
        raise RuntimeError(what)


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
        "execution_s": result.timings_ms.comfy_execution / 1000,
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
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--settle", type=float, default=0.0, help="pause before each round (s)")
    parser.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args(argv)
    logs.configure("warning")
    if args.what == "download":
        bench = Download(args.base_url, args.out, args.size, args.rounds, args.settle)
        report = bench.run(args.small)
    else:
        report = idle(args.base_url, args.out, args.seconds)
    json.dump(report, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
