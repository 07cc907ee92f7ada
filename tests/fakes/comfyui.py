"""Moved to ``fakes.comfyui``: this re-export keeps old imports working until they are switched."""

from fakes.comfyui import *  # noqa: F403
from fakes.comfyui import (
    FIXTURES_DIR,
    FakeComfyUI,
    big_output_chunks,
    big_output_sha256,
    load_fixture,
)
from fakes.comfyui.__main__ import main

__all__ = [
    "FIXTURES_DIR",
    "FakeComfyUI",
    "big_output_chunks",
    "big_output_sha256",
    "load_fixture",
    "main",
]

if __name__ == "__main__":
    raise SystemExit(main())
