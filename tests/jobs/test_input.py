"""Building a job's task input from a file or template, parameters, overrides and images."""

from __future__ import annotations

from pathlib import Path

import pytest

from comfyui_worker.errors import InvalidWorkflowError
from comfyui_worker.jobs.input import build_task_input, read_image
from comfyui_worker.jobs.read import elide_images
from tests.graphs import PNG_1PX_BASE64, smoke


def test_a_template_gets_params_overrides_and_images_merged():
    """Extras merge into the envelope the worker reads; the source's own values stay."""
    built = build_task_input(
        {"template": "smoke", "params": {"color": 1, "blur_radius": 2}},
        params={"color": 255},
        overrides={"3.filename_prefix": "x"},
        images=[{"name": "image", "base64": PNG_1PX_BASE64}],
    )
    assert built == {
        "template": "smoke",
        "params": {"color": 255, "blur_radius": 2},
        "overrides": {"3.filename_prefix": "x"},
        "images": [{"name": "image", "base64": PNG_1PX_BASE64}],
    }


def test_a_bare_graph_becomes_an_envelope():
    """A graph file is sent as {"workflow": graph}, so params can go beside it."""
    assert build_task_input(smoke(3), params={"a": 1}) == {"workflow": smoke(3), "params": {"a": 1}}


@pytest.mark.parametrize(
    ("source", "images", "message"),
    [
        ({"nodes": [], "links": []}, [], "API"),
        (
            {"template": "smoke", "images": [{"name": "image", "path": "a.png"}]},
            [{"name": "image", "base64": "AA=="}],
            "unique",
        ),
    ],
    ids=["ui-format", "repeated-image"],
)
def test_a_bad_source_or_merge_is_invalid_workflow(source, images, message):
    """The file, and the merge itself, are validated before LittleHorse sees anything."""
    with pytest.raises(InvalidWorkflowError, match=message):
        build_task_input(source, images=images)


def test_an_image_file_is_read_and_a_missing_one_named(tmp_path: Path):
    """--image NAME=PATH reads the file; an unreadable one names the image and the path."""
    path = tmp_path / "in.png"
    path.write_bytes(b"\x89PNG")
    assert read_image("image", path) == b"\x89PNG"
    with pytest.raises(InvalidWorkflowError, match="image 'image': cannot read"):
        read_image("image", tmp_path / "missing.png")


def test_images_are_elided_for_display():
    """Shown inputs carry each image's size, never its bytes."""
    shown = elide_images(
        {"template": "t", "images": [{"name": "i", "base64": "QUJD"}, {"name": "p", "path": "x"}]}
    )
    assert shown["images"] == [
        {"name": "i", "base64": "<4 base64 characters>"},
        {"name": "p", "path": "x"},
    ]
