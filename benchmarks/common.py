"""Shared pieces: graphs, settings, percentiles, /proc readers, the machine description."""

from __future__ import annotations

import json
import math
import os
import platform
import random
import re
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from comfyui_worker.settings import ComfySettings, load_comfy

ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS = ROOT / "workflows"
MIB = 1024 * 1024
GIB = 1024 * MIB

Graph = dict[str, Any]


# --- graphs (fake ComfyUI) --------------------------------------------------------------


def smoke_graph(color: int, prefix: str = "bench/smoke") -> Graph:
    """EmptyImage -> ImageBlur -> SaveImage; a new ``color`` defeats ComfyUI's cache."""
    return {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": color % 0xFFFFFF},
        },
        "2": {
            "class_type": "ImageBlur",
            "inputs": {"image": ["1", 0], "blur_radius": 1, "sigma": 1.0},
        },
        "3": {
            "class_type": "SaveImage",
            "inputs": {"images": ["2", 0], "filename_prefix": prefix},
        },
    }


def sleep_graph(color: int, seconds: float, prefix: str = "bench/sleep") -> Graph:
    """The smoke graph with a fake-only FakeSleep: ComfyUI "works" for ``seconds``."""
    graph = smoke_graph(color, prefix)
    graph["4"] = {"class_type": "FakeSleep", "inputs": {"seconds": seconds, "value": ["1", 0]}}
    graph["2"]["inputs"]["image"] = ["4", 0]
    return graph


def big_graph(size_bytes: int, prefix: str) -> Graph:
    """One fake-only FakeBigOutput file of ``size_bytes`` (streamed by the fake's /view)."""
    return {
        "1": {
            "class_type": "FakeBigOutput",
            "inputs": {"size_bytes": size_bytes, "filename_prefix": prefix},
        }
    }


def batch_graph(count: int, color: int, prefix: str) -> Graph:
    """EmptyImage with ``batch_size=count`` -> SaveImage: ``count`` small PNG outputs."""
    return {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": 64, "height": 64, "batch_size": count, "color": color % 0xFFFFFF},
        },
        "2": {
            "class_type": "SaveImage",
            "inputs": {"images": ["1", 0], "filename_prefix": prefix},
        },
    }


# --- settings ---------------------------------------------------------------------------


def settings_for(base_url: str, output_dir: Path, **env: str) -> ComfySettings:
    """Worker settings as the environment would give them: defaults unless overridden."""
    return load_comfy(
        {
            "COMFYUI_BASE_URL": base_url,
            "COMFYUI_OUTPUT_DIR": str(output_dir),
            "COMFYUI_WORKFLOWS_DIR": str(WORKFLOWS),
            **env,
        }
    )


# --- statistics -------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (``q`` in 0..100), like numpy's default."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summary_ms(seconds: Sequence[float]) -> dict[str, float]:
    """n, p50, p95, p99, mean, min, max of durations given in seconds, as milliseconds."""
    ms = [s * 1000 for s in seconds]
    return {
        "n": len(ms),
        "p50_ms": percentile(ms, 50),
        "p95_ms": percentile(ms, 95),
        "p99_ms": percentile(ms, 99),
        "mean_ms": sum(ms) / len(ms) if ms else math.nan,
        "min_ms": min(ms) if ms else math.nan,
        "max_ms": max(ms) if ms else math.nan,
    }


# --- bytes ------------------------------------------------------------------------------


def byte_chunks(size: int, *, seed: int = 0, chunk: int = MIB) -> Iterator[bytes]:
    """``size`` reproducible, incompressible bytes as fresh ``bytes`` objects, as httpx yields."""
    block = bytearray(random.Random(seed).randbytes(chunk))
    sent = 0
    while sent < size:
        block[:8] = sent.to_bytes(8, "little")
        piece = bytes(block[: min(chunk, size - sent)])
        sent += len(piece)
        yield piece


# --- /proc ------------------------------------------------------------------------------


def proc_status_kib(field: str, pid: int | str = "self") -> int:
    """One ``VmRSS``/``VmHWM``-style line of /proc/PID/status, in KiB (0 if absent)."""
    text = Path(f"/proc/{pid}/status").read_text()
    match = re.search(rf"^{field}:\s+(\d+)\s+kB", text, re.MULTILINE)
    return int(match.group(1)) if match else 0


def peak_rss_growth(*, exact: bool = False) -> Callable[[], float]:
    """Start measuring; the returned function gives the peak RSS growth since, in MiB.

    VmHWM is reset to the current RSS (``echo 5 > /proc/self/clear_refs``, Linux >= 4.0).
    Where that is refused, growth counts from the earlier peak: a lower bound, which a
    test cannot rely on, so ``exact=True`` raises instead.
    """
    try:
        Path("/proc/self/clear_refs").write_text("5")
        base = proc_status_kib("VmRSS")
    except OSError:
        if exact:
            raise
        base = proc_status_kib("VmHWM")
    return lambda: max(proc_status_kib("VmHWM") - base, 0) / 1024


def machine() -> dict[str, Any]:
    """CPU model, cores, RAM, Python and OS: enough to compare runs across hosts."""
    model = "unknown"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem_kib = 0
    meminfo = Path("/proc/meminfo")
    if meminfo.is_file():
        match = re.search(r"^MemTotal:\s+(\d+)", meminfo.read_text(), re.MULTILINE)
        mem_kib = int(match.group(1)) if match else 0
    return {
        "cpu_model": model,
        "cpu_cores": os.cpu_count() or 0,
        "cpu_cores_usable": len(os.sched_getaffinity(0)),
        "ram_gib": round(mem_kib / MIB, 1),
        "python": sys.version.split()[0],
        "python_implementation": platform.python_implementation(),
        "os": f"{platform.system()} {platform.release()}",
    }


def run_child(module: str, args: list[str], what: str) -> dict[str, Any]:
    """``python -m module --child ARGS`` in a process of its own; its last line as JSON.

    A measured side (an upload, a download) runs alone, so its RSS and CPU are its own.
    """
    done = subprocess.run(
        [sys.executable, "-m", module, "--child", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    if done.returncode != 0:
        raise RuntimeError(f"{what} child failed:\n{done.stderr[-4000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result
