"""``python -m benchmarks --quick`` runs end to end and reports every figure as a number."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from benchmarks.report import CYCLE_PHASES, GOALS, upload_table

# The benchmark's quick run takes about a minute.
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent

SUMMARY = {"n", "p50_ms", "p95_ms", "p99_ms", "mean_ms", "min_ms", "max_ms"}
SHORT_RUNS = ("short_prefetch_0", "short_prefetch_1", "short_prefetch_2")
EXPECTED: dict[str, dict[str, set[str] | None]] = {
    "overhead": {"default_fsync": None, "fsync_off": None},
    "detection": {
        "ours": SUMMARY,
        "websocket_only": SUMMARY,
        "baseline_poll": SUMMARY,
        "execution_s": SUMMARY,
        "ratio_baseline_to_ours_p50": None,
        "ratio_baseline_to_ours_p95": None,
        "poll_interval_s": None,
    },
    "download": {
        "size_bytes": None,
        "big_fsync": {"mb_per_s", "rss_growth_mib", "download_s", "cpu_user_s", "cpu_sys_s"},
        "big_nofsync": {"mb_per_s", "rss_growth_mib"},
        "raw_httpx": {"mb_per_s", "download_s"},
        "disk_write": {"mb_per_s", "write_s", "fsync_s"},
        "small_fsync": {"files", "files_per_s"},
        "small_nofsync": {"files", "files_per_s"},
        "ratio_to_raw_pct": None,
        "ratio_to_disk_write_pct": None,
        "fresh_memory_touch_mb_per_s": None,
    },
    "idle": {"cpu_s": None, "wall_s": None, "cpu_pct_of_core": None, "execution_s": None},
    "through_littlehorse": {
        "tasks": None,
        "fake": {"prefetch_0", "prefetch_1", *SHORT_RUNS},
        "real": {"prefetch_0", "prefetch_1", *SHORT_RUNS},
        "queued_limit": {"gap_to_started", "execution"},
        "short_queued_limit": {"gap_to_started", "execution"},
    },
    "overlap": {
        "size_bytes": None,
        "prefetch_0": {"gap_ms", "download_ms"},
        "prefetch_1": {"gap_ms", "download_ms"},
    },
    "upload": {"size_bytes": None, "ratio_to_boto3_pct": None, "ours_rss_growth_mib_worst": None},
    "models": {"size_bytes": None, "ratio_to_curl_pct": None, "ours_rss_growth_mib_worst": None},
}
OVERHEAD_PARTS = {"overhead", "wall", "comfy_execution", "before_start", "after_finish"}


def leaves(node: Any, path: str = "") -> list[tuple[str, Any]]:
    if isinstance(node, dict):
        return [item for key, value in node.items() for item in leaves(value, f"{path}/{key}")]
    if isinstance(node, list):
        return [item for i, value in enumerate(node) for item in leaves(value, f"{path}/{i}")]
    return [(path, node)]


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def test_quick_run_reports_every_figure(tmp_path: Path):
    """Every item runs; every figure is a finite number; machine and verdicts are there."""
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Figure" in done.stdout and ("pass" in done.stdout or "MISS" in done.stdout)
    results = json.loads(out.read_text())

    for section, keys in EXPECTED.items():
        assert section in results, section
        for key, inner in keys.items():
            assert key in results[section], f"{section}/{key}"
            if inner is not None:
                assert inner <= set(results[section][key]), f"{section}/{key}"
        bad = [
            (p, v)
            for p, v in leaves(results[section])
            if not is_number(v) and not p.endswith("/server")
        ]
        assert not bad, f"{section}: non-numeric figures {bad}"
    for kind in ("fake", "real"):
        for prefetch in ("prefetch_0", "prefetch_1", *SHORT_RUNS):
            run = results["through_littlehorse"][kind][prefetch]
            assert {"gap_to_started", "execution", "tasks_per_s", "ratio_to_limit_p50"} <= set(run)
            assert {"claim", "checkpoint", "report"} == set(run["round_trips"])
            assert all(trip["n"] >= 1 for trip in run["round_trips"].values()), run
        for prefetch in SHORT_RUNS:
            phases = results["through_littlehorse"][kind][prefetch]["cycle"]
            assert set(phases) == {*CYCLE_PHASES, "save", "cycle"} and phases["cycle"]["n"] >= 1
    for part in ("default_fsync", "fsync_off"):
        assert set(results["overhead"][part]) == OVERHEAD_PARTS
        for summary in results["overhead"][part].values():
            assert set(summary) >= SUMMARY

    machine = results["machine"]
    assert machine["cpu_model"] and machine["cpu_cores"] >= 1 and machine["ram_gib"] > 0
    assert machine["python"].count(".") == 2
    assert is_number(results["run"]["duration_s"]) and is_number(results["run"]["clock_check_s"])
    assert [t["key"] for t in results["targets"]] == [g.key for g in GOALS]
    for target in results["targets"]:
        assert is_number(target["value"]) and isinstance(target["passed"], bool), target
    alone = upload_table(results["upload"])  # what `python -m benchmarks.upload` prints
    assert "median of rounds" in alone and "CPU user+sys" in alone and "upload_ratio" not in alone
    assert alone.count("pass") + alone.count("MISS") == 2
