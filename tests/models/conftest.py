"""Fixtures of the models tests: the models directory a fake ComfyUI lists."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from fakes.comfyui import FakeComfyUI


@pytest.fixture
def models_dir(tmp_path: Path) -> Path:
    """The models directory ComfyUI and the worker share."""
    (tmp_path / "models").mkdir()
    return tmp_path / "models"


@pytest.fixture
def comfy(tmp_path: Path, models_dir: Path) -> Iterator[FakeComfyUI]:
    """A fake ComfyUI listing the models directory (and no built-in checkpoints)."""
    with FakeComfyUI(tmp_path / "comfy", models_dir=models_dir, checkpoints=[]) as fake:
        yield fake
