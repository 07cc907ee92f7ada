"""Upload of a big output to S3: ``ObjectStore.write`` vs boto3's ``upload_file``.

``uv run python -m benchmarks.upload [--size-mib 1024] [--rounds 2] [--json PATH]``

A local SeaweedFS (``fakes/seaweed.py``) is the S3 server for both. Ours streams the
bytes as the worker gets them from ComfyUI (fresh 1 MiB ``bytes`` objects from a
generator, hashed on the way); boto3 uploads the same bytes from a file (page cache
warm) with its default ``TransferConfig`` (8 MiB parts, 10 threads). Each upload runs
in a child process of its own, so peak RSS growth (VmHWM, reset just before) and CPU
are that upload's alone. Rounds interleave the two and start from the same state
(``os.sync`` and a pause); throughputs are the best round, RSS the worst.
Targets: ours >= 80 % of boto3's MB/s; RSS growth <= 64 MiB.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import MIB, byte_chunks, machine, peak_rss_growth, run_child
from benchmarks.report import upload_table


def write_file(path: Path, size: int) -> None:
    with path.open("wb") as out:
        for piece in byte_chunks(size):
            out.write(piece)


# --- the children -------------------------------------------------------------------


def child_ours(args: argparse.Namespace) -> dict[str, Any]:
    from comfyui_worker.outputs.objstore import ObjectStore

    config = json.loads(args.config)
    store = ObjectStore(args.url, config, part_bytes=args.part_mib * MIB)
    run = store.run("bench")
    run.write("warm.bin", byte_chunks(16 * MIB), media_type="x", size_hint=None)  # runtime, pool
    return _measured(
        lambda: (
            run.write(
                "ours.bin", byte_chunks(args.size), media_type="video/mp4", size_hint=args.size
            ).sha256
        )
    )


def child_boto3(args: argparse.Namespace) -> dict[str, Any]:
    import boto3  # type: ignore[import-untyped]
    from botocore.config import Config  # type: ignore[import-untyped]

    config = json.loads(args.config)
    client = boto3.client(
        "s3",
        endpoint_url=config["AWS_ENDPOINT_URL"],
        aws_access_key_id=config["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=config["AWS_SECRET_ACCESS_KEY"],
        region_name=config["AWS_REGION"],
        config=Config(s3={"addressing_style": "path"}),
    )
    bucket, _, prefix = args.url.removeprefix("s3://").partition("/")
    client.put_object(Bucket=bucket, Key=f"{prefix}/warm.bin", Body=b"x" * MIB)
    return _measured(lambda: client.upload_file(args.file, bucket, f"{prefix}/boto3.bin"))


def _measured(upload: Any) -> dict[str, Any]:
    growth_mib = peak_rss_growth()
    cpu_before = resource.getrusage(resource.RUSAGE_SELF)
    start = time.monotonic()
    upload()
    took = time.monotonic() - start
    cpu_after = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "seconds": took,
        "rss_growth_mib": growth_mib(),
        "cpu_user_s": cpu_after.ru_utime - cpu_before.ru_utime,
        "cpu_sys_s": cpu_after.ru_stime - cpu_before.ru_stime,
    }


# --- the parent ----------------------------------------------------------------------


def _child(kind: str, args: list[str]) -> dict[str, Any]:
    return run_child("benchmarks.upload", [kind, *args], f"{kind} upload")


def measure(size: int, rounds: int, settle_s: float, part_mib: int) -> dict[str, Any]:
    """Start SeaweedFS, run the interleaved rounds, return every figure."""
    from fakes.seaweed import running_seaweed

    work = Path(tempfile.mkdtemp(prefix="bench-upload-"))
    try:
        source = work / "source.bin"
        write_file(source, size)
        with running_seaweed(work / "seaweed") as server:
            url = f"s3://{server.bucket}/bench"
            common = ["--url", url, "--config", json.dumps(server.config())]
            common += ["--size", str(size), "--file", str(source), "--part-mib", str(part_mib)]
            samples: dict[str, list[dict[str, Any]]] = {"ours": [], "boto3": []}
            for number in range(rounds):
                for kind in ("ours", "boto3") if number % 2 == 0 else ("boto3", "ours"):
                    os.sync()
                    time.sleep(settle_s)
                    sample = _child(kind, common)
                    sample["mb_per_s"] = size / sample["seconds"] / 1e6
                    samples[kind].append(sample)
                    print(
                        f"  round {number + 1} {kind:5}: {sample['mb_per_s']:6.0f} MB/s, "
                        f"RSS +{sample['rss_growth_mib']:.1f} MiB",
                        file=sys.stderr,
                        flush=True,
                    )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    best = {k: max(v, key=lambda s: s["mb_per_s"]) for k, v in samples.items()}
    return {
        "size_bytes": size,
        "rounds": rounds,
        "part_mib": part_mib,
        "ours": best["ours"],
        "boto3": best["boto3"],
        "samples": samples,
        "ratio_to_boto3_pct": 100 * best["ours"]["mb_per_s"] / best["boto3"]["mb_per_s"],
        "median_mb_per_s": {
            k: statistics.median(s["mb_per_s"] for s in v) for k, v in samples.items()
        },
        "ours_rss_growth_mib_worst": max(s["rss_growth_mib"] for s in samples["ours"]),
        "boto3_rss_growth_mib_worst": max(s["rss_growth_mib"] for s in samples["boto3"]),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.upload", description=__doc__)
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--settle", type=float, default=3.0, help="pause before each upload (s)")
    parser.add_argument("--part-mib", type=int, default=8)
    parser.add_argument("--json", type=Path, metavar="PATH")
    parser.add_argument("--child", choices=("ours", "boto3"), help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--config", help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--file", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps((child_ours if args.child == "ours" else child_boto3)(args)))
        return 0
    result = measure(args.size_mib * MIB, args.rounds, args.settle, args.part_mib)
    result["machine"] = machine()
    m = result["machine"]
    print(
        f"upload to a local SeaweedFS: {m['cpu_model']}, {m['cpu_cores']} cores, "
        f"Python {m['python']}\n"
    )
    print(upload_table(result))
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
