"""Targets, the printed table and the JSON file."""

from __future__ import annotations

import json
import math
import operator
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

Results = dict[str, Any]
CYCLE_PHASES = ("detect", "turn", "checkpoint", "post")  # benchmarks/cycle.py

_OPS: dict[str, Callable[[float, float], bool]] = {
    "<=": operator.le,
    "<": operator.lt,
    ">=": operator.ge,
}


@dataclass(frozen=True)
class Goal:
    """One goal: ``value op limit``."""

    key: str
    name: str
    path: tuple[str, ...]
    op: str
    limit: float
    unit: str

    def value(self, results: Results) -> float:
        """The measured figure this goal is about (NaN if that item did not run)."""
        node: Any = results
        for part in self.path:
            if not isinstance(node, dict) or part not in node:
                return math.nan
            node = node[part]
        return float(node)

    def passed(self, results: Results) -> bool:
        """Whether the figure meets the goal (a missing figure misses)."""
        value = self.value(results)
        return not math.isnan(value) and _OPS[self.op](value, self.limit)

    def text(self) -> str:
        """``p50 <= 15 ms`` style."""
        return f"{self.op} {self.limit:g} {self.unit}"


GOALS = (
    Goal(
        "overhead_p50",
        "per-task overhead p50",
        ("overhead", "default_fsync", "overhead", "p50_ms"),
        "<=",
        8,
        "ms",
    ),
    Goal("detection_p50", "detection latency p50", ("detection", "ours", "p50_ms"), "<=", 5, "ms"),
    Goal(
        "download_ratio",
        "1 GiB download vs raw httpx",
        ("download", "ratio_to_raw_pct"),
        ">=",
        80,
        "%",
    ),
    Goal(
        "download_rss",
        "RSS growth during 1 GiB download",
        ("download", "big_fsync", "rss_growth_mib"),
        "<=",
        32,
        "MiB",
    ),
    Goal("idle_cpu", "idle CPU", ("idle", "cpu_pct_of_core"), "<", 1, "% of a core"),
    Goal(
        "gap_prefetch_off",
        "GPU idle gap p50, prefetch off",
        ("through_littlehorse", "fake", "prefetch_0", "gap_to_started", "p50_ms"),
        "<=",
        20,
        "ms",
    ),
    Goal(
        "gap_prefetch_on",
        "GPU idle gap p50, prefetch on",
        ("through_littlehorse", "fake", "prefetch_1", "gap_to_started", "p50_ms"),
        "<=",
        5,
        "ms",
    ),
    Goal(
        "short_gap_prefetch_off",
        "GPU idle gap p50, ~10 ms tasks, prefetch off",
        ("through_littlehorse", "fake", "short_prefetch_0", "gap_to_started", "p50_ms"),
        "<=",
        10,
        "ms",
    ),
    Goal(
        "short_gap_prefetch_2",
        "GPU idle gap p50, ~10 ms tasks, prefetch 2 (recommended for them)",
        ("through_littlehorse", "fake", "short_prefetch_2", "gap_to_started", "p50_ms"),
        "<=",
        3,
        "ms",
    ),
    Goal(
        "overlap_gap",
        "idle gap after a big output, prefetch on",
        ("overlap", "prefetch_1", "gap_ms"),
        "<=",
        20,
        "ms",
    ),
    Goal("upload_ratio", "S3 upload vs boto3", ("upload", "ratio_to_boto3_pct"), ">=", 80, "%"),
    Goal(
        "upload_rss",
        "RSS growth during the S3 upload",
        ("upload", "ours_rss_growth_mib_worst"),
        "<=",
        64,
        "MiB",
    ),
    Goal("models_ratio", "model download vs curl", ("models", "ratio_to_curl_pct"), ">=", 80, "%"),
    Goal(
        "models_rss",
        "RSS growth during a model download",
        ("models", "ours_rss_growth_mib_worst"),
        "<=",
        64,
        "MiB",
    ),
)


def evaluate(results: Results) -> list[dict[str, Any]]:
    """Every target with its measured value and verdict, for the JSON."""
    rows = []
    for target in GOALS:
        value = target.value(results)
        row: dict[str, Any] = asdict(target)
        row["path"] = "/".join(target.path)
        row["value"] = None if math.isnan(value) else value
        row["passed"] = target.passed(results)
        rows.append(row)
    return rows


def write_json(path: Path, results: Results) -> None:
    """Every figure, the machine and the verdicts."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2, sort_keys=False) + "\n")


# --- the table ------------------------------------------------------------------------

Row = tuple[str, str, str, str]  # figure, value, target, verdict (a title has no value)


def _ms(summary: dict[str, float], *keys: str) -> str:
    return " / ".join(f"{summary[f'{k}_ms']:.1f}" for k in keys) + " ms"


def _size(size_bytes: float) -> str:
    return f"{size_bytes / 2**30:g} GiB" if size_bytes >= 2**30 else f"{size_bytes / 2**20:g} MiB"


class _Table:
    def __init__(self, results: Results) -> None:
        self.results = results
        self.rows: list[Row] = []

    def title(self, text: str) -> None:
        self.rows.append((text, "", "", ""))

    def add(self, figure: str, value: str, goal: str | None = None) -> None:
        if goal is None:
            self.rows.append((f"  {figure}", value, "", ""))
            return
        found = next(g for g in GOALS if g.key == goal)
        verdict = "pass" if found.passed(self.results) else "MISS"
        self.rows.append((f"  {figure}", value, found.text(), verdict))

    def render(self) -> str:
        header: Row = ("Figure", "Value", "Target", "Result")
        body = [r for r in self.rows if r[1]]
        widths = [max(len(r[i]) for r in [header, *body]) for i in range(4)]
        lines = [_line(header, widths), _line(tuple("-" * w for w in widths), widths)]
        lines += [_line(r, widths) if r[1] else r[0] for r in self.rows]
        return "\n".join(lines)


def _line(row: tuple[str, ...], widths: list[int]) -> str:
    return "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()


def table(results: Results) -> str:
    """The human summary: one line per figure, targets and pass/MISS beside them."""
    out = _Table(results)
    for key, section in (
        ("overhead", _overhead),
        ("detection", _detection),
        ("download", _download),
        ("idle", _idle),
        ("through_littlehorse", _through_lh),
        ("overlap", _overlap),
        ("upload", _upload),
        ("models", _models),
    ):
        if key in results:
            section(out, results[key])
    return out.render()


def _overhead(out: _Table, over: Results) -> None:
    on, off = over["default_fsync"], over["fsync_off"]
    out.title(
        f"1. Per-task overhead = Runner.run - ComfyUI execution ({on['overhead']['n']} tasks)"
    )
    out.add(
        "default settings (fsync on) p50/p95/p99",
        _ms(on["overhead"], "p50", "p95", "p99"),
        "overhead_p50",
    )
    out.add("COMFYUI_FSYNC=false p50/p95/p99", _ms(off["overhead"], "p50", "p95", "p99"))
    out.add("of which before ComfyUI starts p50/p95", _ms(on["before_start"], "p50", "p95"))
    out.add("of which after ComfyUI finishes p50/p95", _ms(on["after_finish"], "p50", "p95"))
    out.add("ComfyUI's own execution p50", _ms(on["comfy_execution"], "p50"))


def _detection(out: _Table, det: Results) -> None:
    ours, ws, poll = det["ours"], det["websocket_only"], det["baseline_poll"]
    out.title(
        "2. Completion detection = ComfyUI finished -> worker knows "
        f"(execution ~{det['execution_s']['p50_ms']:.0f} ms)"
    )
    out.add(
        f"ours: WebSocket + /history (n={ours['n']}) p50/p95",
        _ms(ours, "p50", "p95"),
        "detection_p50",
    )
    out.add(f"WebSocket only (n={ws['n']}) p50/p95", _ms(ws, "p50", "p95"))
    interval = f"{det['poll_interval_s']:g}"
    out.add(f"poll /history every {interval} s (n={poll['n']}) p50/p95", _ms(poll, "p50", "p95"))
    ratios = f"{det['ratio_baseline_to_ours_p50']:.0f}x / {det['ratio_baseline_to_ours_p95']:.0f}x"
    out.add("baseline / ours p50 / p95", ratios)


def _download(out: _Table, dl: Results) -> None:
    big, disk = dl["big_fsync"], dl["disk_write"]
    out.title(
        f"3. Download: {_size(dl['size_bytes'])} FakeBigOutput via Runner.run "
        f"(worker process of its own, best of {dl['rounds']})"
    )
    out.add("Runner.run, default (fsync on)", f"{big['mb_per_s']:.0f} MB/s")
    out.add("raw httpx /view -> /dev/null", f"{dl['raw_httpx']['mb_per_s']:.0f} MB/s")
    out.add("worker / raw", f"{dl['ratio_to_raw_pct']:.0f} %", "download_ratio")
    out.add("peak RSS growth (fsync on)", f"{big['rss_growth_mib']:.1f} MiB", "download_rss")
    out.add("Runner.run, COMFYUI_FSYNC=false", f"{dl['big_nofsync']['mb_per_s']:.0f} MB/s")
    fsync = f"fsync {disk['fsync_s']:.2f} s"
    out.add("disk: plain write + fsync", f"{disk['mb_per_s']:.0f} MB/s ({fsync})")
    out.add("worker / plain write + fsync", f"{dl['ratio_to_disk_write_pct']:.0f} %")
    cpu = f"{big['cpu_user_s']:.2f} / {big['cpu_sys_s']:.2f} s"
    out.add("worker CPU, user / sys (fsync on)", cpu)
    touch = f"{dl['fresh_memory_touch_mb_per_s']:.0f} MB/s"
    out.add(f"host: first touch of {_size(dl['size_bytes'])} fresh memory", touch)
    on, off = dl["small_fsync"], dl["small_nofsync"]
    out.add(
        f"{on['files']} small outputs, fsync on / off",
        f"{on['files_per_s']:.0f} / {off['files_per_s']:.0f} files/s",
    )


def _idle(out: _Table, idle: Results) -> None:
    out.title(f"4. Idle cost while ComfyUI executes {idle['execution_s']:.0f} s")
    value = f"{idle['cpu_pct_of_core']:.2f} % of a core ({idle['cpu_s']:.2f} s)"
    out.add("worker process CPU (user+sys)", value, "idle_cpu")


def _through_lh(out: _Table, lh: Results) -> None:
    out.title(f"5. Through LittleHorse: main.py worker, {lh['tasks']} WfRuns started at once")
    limit = lh["queued_limit"]["gap_to_started"]
    for kind in ("fake", "real"):
        if kind in lh:
            _through_server(out, lh[kind], goals=kind == "fake")
    out.add("limit: ComfyUI's own gap, queued p50/p95", _ms(limit, "p50", "p95"))
    out.add("ComfyUI execution per prompt p50", _ms(lh["queued_limit"]["execution"], "p50"))
    short = lh.get("short_queued_limit")
    if short is not None:
        out.add("~10 ms tasks: limit, queued p50/p95", _ms(short["gap_to_started"], "p50", "p95"))
        out.add("~10 ms tasks: ComfyUI execution p50", _ms(short["execution"], "p50"))


def _through_server(out: _Table, server: Results, *, goals: bool) -> None:
    for prefetch in (0, 1):
        run = server.get(f"prefetch_{prefetch}")
        if run is None:
            continue
        goal = ("gap_prefetch_on" if prefetch else "gap_prefetch_off") if goals else None
        _row(out, f"{server['server']}, WORKER_PREFETCH={prefetch}", run, goal)
    short_goals = {0: "short_gap_prefetch_off", 2: "short_gap_prefetch_2"}
    for prefetch in (0, 1, 2):
        run = server.get(f"short_prefetch_{prefetch}")
        if run is None:
            continue
        goal = short_goals.get(prefetch) if goals else None
        _row(out, f"{server['server']}, ~10 ms tasks, WORKER_PREFETCH={prefetch}", run, goal)
        phases = run["cycle"]
        shown = " / ".join(f"{phases[name]['p50_ms']:.1f}" for name in CYCLE_PHASES)
        out.add("  cycle p50 = detect / turn / checkpoint / post", f"{shown} ms")
        out.add("  beside it: saving the finished one's outputs p50", _ms(phases["save"], "p50"))
        out.add("  cycle (finished -> next queued) p50/p95", _ms(phases["cycle"], "p50", "p95"))


def _row(out: _Table, name: str, run: Results, goal: str | None) -> None:
    out.add(f"{name}: gap p50/p95", _ms(run["gap_to_started"], "p50", "p95"), goal)
    out.add(
        "  ratio to limit (p50, limit >= 1 ms), rate",
        f"{run['ratio_to_limit_p50']:.1f}x, {run['tasks_per_s']:.1f} tasks/s",
    )
    trips = run["round_trips"]
    shown = " / ".join(f"{trips[call]['p50_ms']:.1f}" for call in ("claim", "checkpoint", "report"))
    out.add("  round trips p50: claim / checkpoint / report", f"{shown} ms")


def _overlap(out: _Table, over: Results) -> None:
    out.title(f"6. A {_size(over['size_bytes'])} output, then a task (fake ComfyUI)")
    for prefetch in (0, 1):
        run = over[f"prefetch_{prefetch}"]
        goal = "overlap_gap" if prefetch else None
        out.add(
            f"WORKER_PREFETCH={prefetch}: idle gap / download",
            f"{run['gap_ms']:.1f} / {run['download_ms']:.0f} ms",
            goal,
        )


def upload_table(up: Results) -> str:
    """Item 7 alone (``python -m benchmarks.upload``): with medians, boto3's RSS and CPU."""
    out = _Table({"upload": up})
    _upload(out, up, detail=True)
    return out.render()


def _upload(out: _Table, up: Results, *, detail: bool = False) -> None:
    ours, boto = up["ours"], up["boto3"]
    out.title(f"7. Upload of {_size(up['size_bytes'])} to S3 (local SeaweedFS)")
    out.add("ObjectStore.write, streamed (best)", f"{ours['mb_per_s']:.0f} MB/s")
    out.add("boto3 upload_file, from a file (best)", f"{boto['mb_per_s']:.0f} MB/s")
    out.add("ours / boto3", f"{up['ratio_to_boto3_pct']:.0f} %", "upload_ratio")
    out.add("peak RSS growth (worst)", f"{up['ours_rss_growth_mib_worst']:.1f} MiB", "upload_rss")
    if detail:
        median = up["median_mb_per_s"]
        out.add(
            "median of rounds, ours / boto3", f"{median['ours']:.0f} / {median['boto3']:.0f} MB/s"
        )
        out.add("boto3: peak RSS growth (worst)", f"{up['boto3_rss_growth_mib_worst']:.1f} MiB")
        cpu = [run["cpu_user_s"] + run["cpu_sys_s"] for run in (ours, boto)]
        out.add("CPU user+sys, ours / boto3", f"{cpu[0]:.1f} / {cpu[1]:.1f} s")


def models_table(models: Results) -> str:
    """Item 8 alone (``python -m benchmarks.models``)."""
    out = _Table({"models": models})
    _models(out, models)
    return out.render()


def _models(out: _Table, models: Results) -> None:
    ours, curl = models["ours"], models["curl"]
    out.title(f"8. Model download of {_size(models['size_bytes'])} over local HTTP")
    out.add(
        "ModelFiles.download: guard, hash, fsync, rename (best)", f"{ours['mb_per_s']:.0f} MB/s"
    )
    out.add("curl -o, same file (best)", f"{curl['mb_per_s']:.0f} MB/s")
    out.add("ours / curl", f"{models['ratio_to_curl_pct']:.0f} %", "models_ratio")
    verified = models["curl_verified_mb_per_s"]
    out.add("curl -o, then sha256sum + fsync (best)", f"{verified:.0f} MB/s")
    out.add("ours / curl + sha256sum + fsync", f"{100 * ours['mb_per_s'] / verified:.0f} %")
    out.add(
        "peak RSS growth (worst)", f"{models['ours_rss_growth_mib_worst']:.1f} MiB", "models_rss"
    )
