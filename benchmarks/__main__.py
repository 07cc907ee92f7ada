"""``uv run python -m benchmarks [--json PATH] [--quick] [--comfyui-url URL]``.

Measures, in one run: (1) per-task overhead of Runner.run, (2) completion detection
latency against two baselines, (3) download throughput and memory, (4) idle CPU while
ComfyUI works, (5) the GPU idle gap through LittleHorse with prefetch off and on, against
ComfyUI's own gap with prompts queued back to back, (6) a big output's download overlapped
with the next task, (7) upload to S3 against boto3. Prints a table with the targets;
``--json`` also writes every figure and a description of the machine. The fake ComfyUI
always runs in its own process; ``--comfyui-url`` points items 1, 2 and 5 at a real
ComfyUI instead (the others need the fake's FakeBigOutput/FakeSleep nodes).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks import (
    detection,
    download,
    idle,
    models,
    overhead,
    overlap,
    report,
    through_lh,
    upload,
)
from benchmarks.common import GIB, MIB, machine
from benchmarks.fakeproc import FakeProcess
from benchmarks.target import FakeTarget, RealTarget, Target
from comfyui_worker import logs


@dataclass(frozen=True)
class Plan:
    """How much of each item to run."""

    overhead_tasks: int
    detection_samples: int
    baseline_samples: int
    download_bytes: int
    download_rounds: int
    settle_s: float
    small_outputs: int
    idle_s: float
    lh_tasks: int
    overlap_bytes: int
    upload_bytes: int
    upload_rounds: int
    model_bytes: int
    model_rounds: int


FULL = Plan(200, 20, 20, GIB, 2, 5.0, 500, 30.0, 100, GIB, GIB, 2, GIB, 2)
QUICK = Plan(20, 6, 2, 64 * MIB, 1, 0.0, 50, 3.0, 10, 64 * MIB, 64 * MIB, 1, 64 * MIB, 1)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write every figure here")
    parser.add_argument("--quick", action="store_true", help="small samples (well under 60 s)")
    parser.add_argument(
        "--comfyui-url", metavar="URL", help="run items 1, 2 and 5 against this real ComfyUI"
    )
    parser.add_argument(
        "--littlehorse",
        default="fake,real",
        metavar="fake,real",
        help="item 5 through which LittleHorse servers (default both: the fake, the real 1.2.1)",
    )
    parser.add_argument(
        "--work-dir", type=Path, help="keep outputs and logs here (default: a temp dir, removed)"
    )
    return parser


def run(argv: list[str] | None = None) -> dict[str, Any]:
    """Run every item; return the results (also printed, and written with --json)."""
    args = build_parser().parse_args(argv)
    logs.configure("warning")
    plan = QUICK if args.quick else FULL
    work_dir = args.work_dir or Path(tempfile.mkdtemp(prefix="comfyui-worker-bench-"))
    work_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    results: dict[str, Any] = {
        "machine": machine(),
        "run": {
            "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "quick": args.quick,
            "plan": asdict(plan),
        },
    }
    try:
        with FakeProcess(work_dir / "comfy", work_dir / "fake-comfyui.log") as fake:
            results["run"]["clock_check_s"] = fake.clock_check()
            target: Target = RealTarget(args.comfyui_url) if args.comfyui_url else FakeTarget(fake)
            results["run"]["comfyui"] = target.label
            results["run"]["fake_comfyui"] = FakeTarget(fake).label
            _items(results, plan, fake, target, work_dir, _servers(args.littlehorse))
    finally:
        if args.work_dir is None:
            shutil.rmtree(work_dir, ignore_errors=True)
    results["run"]["duration_s"] = time.monotonic() - started
    results["targets"] = report.evaluate(results)
    print(_heading(results))
    print(report.table(results))
    if args.json is not None:
        report.write_json(args.json, results)
        print(f"\nfigures written to {args.json}")
    return results


def _servers(value: str) -> tuple[str, ...]:
    chosen = tuple(name.strip() for name in value.split(",") if name.strip())
    unknown = set(chosen) - set(through_lh.SERVERS)
    if unknown or not chosen:
        raise SystemExit(f"--littlehorse: expected fake, real or both, got {value!r}")
    return chosen


def _items(
    results: dict[str, Any],
    plan: Plan,
    fake: FakeProcess,
    target: Target,
    work_dir: Path,
    servers: tuple[str, ...],
) -> None:
    steps: list[tuple[str, str, Callable[[], Any]]] = [
        (
            "overhead",
            f"per-task overhead, {plan.overhead_tasks} tasks x2",
            lambda: {
                "default_fsync": overhead.measure(
                    target, work_dir, plan.overhead_tasks, fsync=True
                ),
                "fsync_off": overhead.measure(target, work_dir, plan.overhead_tasks, fsync=False),
            },
        ),
        (
            "detection",
            f"detection latency, {plan.detection_samples} samples",
            lambda: detection.measure(
                target, work_dir, plan.detection_samples, plan.baseline_samples
            ),
        ),
        (
            "download",
            f"download of {plan.download_bytes // MIB} MiB and {plan.small_outputs} small files",
            lambda: download.measure(
                fake,
                work_dir,
                plan.download_bytes,
                plan.small_outputs,
                rounds=plan.download_rounds,
                settle_s=plan.settle_s,
            ),
        ),
        (
            "idle",
            f"idle CPU over {plan.idle_s:g} s",
            lambda: idle.measure(fake, work_dir, plan.idle_s),
        ),
        (
            "through_littlehorse",
            f"{plan.lh_tasks} tasks through LittleHorse ({','.join(servers)}), prefetch off, on",
            lambda: through_lh.measure(target, work_dir, plan.lh_tasks, servers),
        ),
        (
            "overlap",
            f"a {plan.overlap_bytes // MIB} MiB output then a task, prefetch off and on",
            lambda: overlap.measure(fake, work_dir, plan.overlap_bytes),
        ),
        (
            "upload",
            f"upload of {plan.upload_bytes // MIB} MiB to S3 (SeaweedFS) vs boto3",
            lambda: upload.measure(
                plan.upload_bytes, plan.upload_rounds, plan.settle_s, part_mib=8
            ),
        ),
        (
            "models",
            f"model download of {plan.model_bytes // MIB} MiB vs curl -o",
            lambda: models.measure(plan.model_bytes, plan.model_rounds, plan.settle_s),
        ),
    ]
    for number, (key, what, step) in enumerate(steps, 1):
        began = time.monotonic()
        print(f"[{number}/{len(steps)}] {what} ...", file=sys.stderr, flush=True)
        results[key] = step()
        print(f"      done in {time.monotonic() - began:.1f} s", file=sys.stderr, flush=True)


def _heading(results: dict[str, Any]) -> str:
    m, r = results["machine"], results["run"]
    against = f"against {r['comfyui']}"
    if r["comfyui"] != r["fake_comfyui"]:
        against = f"items 1, 2, 5 against {r['comfyui']}; the others against {r['fake_comfyui']}"
    return "\n".join(
        [
            f"comfyui-worker benchmarks{' (quick)' if r['quick'] else ''}, {against}",
            f"{m['cpu_model']}, {m['cpu_cores']} cores, {m['ram_gib']} GiB RAM, "
            f"Python {m['python']}, {m['os']}; took {r['duration_s']:.0f} s",
            "",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    run(argv)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
