"""The captures of a real ComfyUI 0.3.64 kept with the tests (see their README.md)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

FIXTURES_DIR = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "comfyui"


def load_fixture(name: str) -> Any:
    """Parse a capture from tests/fixtures/comfyui (``.jsonl`` gives a list of messages)."""
    text = (FIXTURES_DIR / name).read_text()
    if name.endswith(".jsonl"):
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    return json.loads(text)
