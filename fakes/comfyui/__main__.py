"""``python -m fakes.comfyui --port 8188 --root DIR [--version 0.38.0]``: serve until Ctrl-C or SIGTERM."""

from __future__ import annotations

import argparse
import contextlib
import signal
import tempfile
import threading
from pathlib import Path

from fakes.comfyui.app import FakeComfyUI


def main(argv: list[str] | None = None) -> int:
    """Serve a fake ComfyUI (e.g. for ``--comfyui-url`` trials) until stopped."""
    parser = argparse.ArgumentParser(prog="python -m fakes.comfyui", description=main.__doc__)
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind")
    parser.add_argument("--port", type=int, default=8188, help="0 picks a free port")
    parser.add_argument(
        "--root", type=Path, help="directory for output/, temp/, input/ (default: a temporary one)"
    )
    parser.add_argument(
        "--version", default="0.3.64", help="ComfyUI generation to behave as (0.3.64 or 0.38.0)"
    )
    parser.add_argument(
        "--execution-time", type=float, default=0.0, help="simulated seconds per prompt"
    )
    args = parser.parse_args(argv)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):  # also when started with SIGINT ignored
        signal.signal(signum, lambda *_: stop.set())
    with contextlib.ExitStack() as stack:
        root = args.root or Path(stack.enter_context(tempfile.TemporaryDirectory()))
        fake = stack.enter_context(
            FakeComfyUI(root, version=args.version, host=args.host, port=args.port)
        )
        fake.execution_time_s = args.execution_time
        print(
            f"fake ComfyUI {args.version} listening on {fake.base_url} (files under {root})",
            flush=True,
        )
        with contextlib.suppress(KeyboardInterrupt):
            while not stop.wait(0.5):
                pass
    print("fake ComfyUI stopped", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
