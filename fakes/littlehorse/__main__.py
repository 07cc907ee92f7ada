"""Standalone fake LittleHorse: ``python -m fakes.littlehorse --port 2023``.

Serves until Ctrl-C/SIGTERM, with WfRuns: ``main.py register`` then RunWf (``lhctl run``,
``main.py submit``) work against it. Prints its address, queues each ``--schedule``
task once a worker registered the TaskDef, and prints every ReportTaskRun and every
WfRun status change as one line.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from collections.abc import Sequence
from typing import Any

from google.protobuf.json_format import MessageToDict
from littlehorse.model import LHStatus, ReportTaskRun

from fakes.littlehorse.core import METADATA_LAG_ENV, SERVER_METADATA_LAG_S
from fakes.littlehorse.server import FakeLittleHorse
from fakes.littlehorse.values import enum_name


def _describe(report: ReportTaskRun) -> str:
    data = MessageToDict(report, preserving_proto_field_name=True)
    return json.dumps(data, sort_keys=True)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m fakes.littlehorse", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind")
    parser.add_argument("--port", type=int, default=2023, help="0 picks a free port")
    parser.add_argument(
        "--advertised-host", help="host handed to workers by RegisterTaskWorker (default --host)"
    )
    parser.add_argument(
        "--time-scale",
        type=float,
        default=1.0,
        help="multiply task timeouts and retry backoff (0.01 = 100x faster)",
    )
    parser.add_argument(
        "--metadata-lag",
        type=float,
        default=None,
        metavar="SECONDS",
        help="keep a Put TaskDef/WfSpec invisible to reads this long, as the real server "
        f"does for ~{SERVER_METADATA_LAG_S} s (default ${METADATA_LAG_ENV}, else 0)",
    )
    parser.add_argument(
        "--schedule",
        nargs=2,
        action="append",
        default=[],
        metavar=("TASK_DEF", "JSON_ARGS"),
        help="queue a bare task once its TaskDef exists; JSON_ARGS is a JSON list of inputs",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Serve the fake until interrupted; return the exit code."""
    args = _parser().parse_args(argv)
    pending: list[tuple[str, list[Any]]] = [
        (name, list(json.loads(raw))) for name, raw in args.schedule
    ]
    fake = FakeLittleHorse(
        args.host,
        advertised_host=args.advertised_host,
        time_scale=args.time_scale,
        metadata_lag_s=args.metadata_lag,
    )
    fake.port = args.port
    fake.start()
    for signum in (signal.SIGINT, signal.SIGTERM):  # also when started with SIGINT ignored
        signal.signal(signum, signal.default_int_handler)
    print(f"fake LittleHorse listening on {fake.address}", flush=True)
    printed = 0
    statuses: dict[str, int] = {}
    try:
        with fake._cond:
            while True:
                for item in [p for p in pending if p[0] in fake.task_defs]:
                    pending.remove(item)
                    run_id = fake.schedule(item[0], item[1])
                    print(f"scheduled {item[0]} task_guid={run_id.task_guid}", flush=True)
                for report in fake.reports[printed:]:
                    print(f"report {_describe(report)}", flush=True)
                printed = len(fake.reports)
                for wf_run_id, record in fake._wf_runs.items():
                    if statuses.get(wf_run_id) != record.run.status:
                        statuses[wf_run_id] = record.run.status
                        print(
                            f"wfrun {wf_run_id} {enum_name(LHStatus, record.run.status)}",
                            flush=True,
                        )
                fake._cond.wait()
    except KeyboardInterrupt:
        pass
    finally:
        fake.stop()
        print("fake LittleHorse stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
