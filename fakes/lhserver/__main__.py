"""Run a real LittleHorse by hand: ``python -m fakes.lhserver [--work-dir DIR]``.

Starts Kafka and the server, prints the ``LHC_*`` lines to point ``main.py`` (or
``lhctl``) at it, and serves until Ctrl-C/SIGTERM, then stops both JVMs. Without
``--work-dir`` the state lives in a temporary directory removed at the end.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import sys
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path

from fakes.lhserver.cluster import RealLittleHorse, running_littlehorse


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m fakes.lhserver", description=__doc__)
    parser.add_argument(
        "--work-dir", type=Path, help="keep logs and state here (reused if present)"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Serve until interrupted; return the exit code."""
    args = _parser().parse_args(argv)
    work_dir = args.work_dir or Path(tempfile.mkdtemp(prefix="lhserver-"))
    for signum in (signal.SIGINT, signal.SIGTERM):  # also when started with SIGINT ignored
        signal.signal(signum, signal.default_int_handler)
    try:
        print(f"starting LittleHorse under {work_dir} ...", file=sys.stderr, flush=True)
        with running_littlehorse(work_dir) as server:
            _print_env(server)
            _serve_until_interrupted()
    except KeyboardInterrupt:  # during start-up: running_littlehorse stopped what it started
        return 130
    finally:
        if args.work_dir is None:
            shutil.rmtree(work_dir, ignore_errors=True)
    print("LittleHorse stopped", file=sys.stderr, flush=True)
    return 0


def _print_env(server: RealLittleHorse) -> None:
    print(f"# LittleHorse {server.version} ready in {server.start_seconds:.1f} s", flush=True)
    for name, value in server.env().items():
        print(f"{name}={value}", flush=True)
    print(f"# logs: {server.log_path} {server.kafka.log_path}", flush=True)


def _serve_until_interrupted() -> None:
    """Block until Ctrl-C/SIGTERM, then ignore both so a second one cannot cut the stop short.

    (``uv run`` forwards a terminal's SIGINT to its child, which then gets it twice.)
    """
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, signal.SIG_IGN)


if __name__ == "__main__":
    sys.exit(main())
