"""comfyui-worker entry point: ``uv run main.py [worker|run|check|register]``."""

from comfyui_worker.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
