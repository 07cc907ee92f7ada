"""Model download: ``ModelFiles.download`` (models on demand) vs ``curl -o`` of the same file.

``uv run python -m benchmarks.models [--size-mib 1024] [--rounds 2] [--json PATH]``

A local HTTP server (Python's ``http.server``, in a process of its own) serves one file
of incompressible bytes from 127.0.0.1. Ours downloads it as the worker does for a
declared model that ComfyUI lacks: through the SSRF guard (127.0.0.1 allow-listed),
into ``.<name>.part``, hashing as it writes, then size and sha256 checked, fsync
(``COMFYUI_FSYNC``'s default) and rename. curl writes the same file with ``-o`` (no hash,
no fsync); the table also shows curl followed by ``sha256sum`` and an fsync, which is
what ours does on the way. Each download runs in a child process; rounds interleave the
two and start from the same state (``os.sync``, a pause). Throughputs are the best round, RSS growth
(VmHWM of our child, reset just before) the worst. Target: ours >= 80 % of curl's MB/s.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from benchmarks.common import MIB, byte_chunks, machine, peak_rss_growth, run_child


def child_ours(args: argparse.Namespace) -> dict[str, Any]:
    from comfyui_worker.models.files import ModelFiles
    from comfyui_worker.models.sources import Sources
    from comfyui_worker.settings import load_comfy
    from comfyui_worker.workflow.modeldecl import ModelDecl

    settings = load_comfy(
        {
            "COMFYUI_BASE_URL": "http://127.0.0.1:9",
            "COMFYUI_OUTPUT_DIR": args.target,
            "COMFYUI_MODELS_DIR": args.target,
            "COMFYUI_MODELS_URL_ALLOW": "127.0.0.1",
        }
    )
    files = ModelFiles(Path(args.target), Sources(settings))
    model = ModelDecl(
        folder="checkpoints", name="ours.safetensors", url=args.url, sha256=args.sha256
    )
    growth_mib = peak_rss_growth()
    start = time.monotonic()
    files.download(model)
    took = time.monotonic() - start
    return {"seconds": took, "rss_growth_mib": growth_mib()}


def _child(args: list[str]) -> dict[str, Any]:
    return run_child("benchmarks.models", args, "model download")


def _curl(url: str, target: Path) -> dict[str, Any]:
    """``curl -o``; then, apart, what ours also does: ``sha256sum`` and an fsync."""
    start = time.monotonic()
    subprocess.run(["curl", "-sS", "--fail", "-o", str(target), url], check=True, timeout=900)
    downloaded = time.monotonic()
    subprocess.run(["sha256sum", str(target)], check=True, capture_output=True, timeout=900)
    fd = os.open(target, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return {"seconds": downloaded - start, "seconds_verified": time.monotonic() - start}


@contextmanager
def serving(directory: Path) -> Iterator[str]:
    """``python -m http.server`` on a free loopback port; yields its base URL."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "http.server",
            str(port),
            "--bind",
            "127.0.0.1",
            "-d",
            str(directory),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(10)


def measure(size: int, rounds: int, settle_s: float) -> dict[str, Any]:
    """Serve a file, download it alternately with ours and curl; every figure."""
    work = Path(tempfile.mkdtemp(prefix="bench-models-"))
    try:
        served = work / "served"
        served.mkdir()
        digest = hashlib.sha256()
        with (served / "model.safetensors").open("wb") as out:
            for piece in byte_chunks(size, seed=7):
                digest.update(piece)
                out.write(piece)
        samples: dict[str, list[dict[str, Any]]] = {"ours": [], "curl": []}
        with serving(served) as base:
            url = f"{base}/model.safetensors"
            for number in range(rounds):
                for kind in ("ours", "curl") if number % 2 == 0 else ("curl", "ours"):
                    target = work / f"round-{number}-{kind}"
                    target.mkdir()
                    os.sync()
                    time.sleep(settle_s)
                    if kind == "ours":
                        args = [
                            "--url",
                            url,
                            "--sha256",
                            digest.hexdigest(),
                            "--target",
                            str(target),
                        ]
                        sample = _child(args)
                    else:
                        sample = _curl(url, target / "curl.safetensors")
                    sample["mb_per_s"] = size / sample["seconds"] / 1e6
                    samples[kind].append(sample)
                    shutil.rmtree(target, ignore_errors=True)
                    print(
                        f"  round {number + 1} {kind:4}: {sample['mb_per_s']:6.0f} MB/s",
                        file=sys.stderr,
                        flush=True,
                    )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    best = {k: max(v, key=lambda s: s["mb_per_s"]) for k, v in samples.items()}
    return {
        "size_bytes": size,
        "rounds": rounds,
        "ours": best["ours"],
        "curl": best["curl"],
        "samples": samples,
        "ratio_to_curl_pct": 100 * best["ours"]["mb_per_s"] / best["curl"]["mb_per_s"],
        "curl_verified_mb_per_s": max(size / s["seconds_verified"] / 1e6 for s in samples["curl"]),
        "ours_rss_growth_mib_worst": max(s["rss_growth_mib"] for s in samples["ours"]),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.models", description=__doc__)
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--settle", type=float, default=3.0, help="pause before each download (s)")
    parser.add_argument("--json", type=Path, metavar="PATH")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--sha256", help=argparse.SUPPRESS)
    parser.add_argument("--target", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child_ours(args)))
        return 0
    from benchmarks.report import models_table

    result = measure(args.size_mib * MIB, args.rounds, args.settle)
    result["machine"] = machine()
    print(models_table(result))
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
