"""Graphs and inputs shared by the tests, the demo and the benchmarks."""

from __future__ import annotations

from typing import Any

PNG_1PX_BASE64 = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg=="


def smoke(color: int = 0, prefix: str = "smoke/test") -> dict[str, Any]:
    """EmptyImage → ImageBlur → SaveImage; vary ``color`` to defeat ComfyUI's cache."""
    return {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": color},
        },
        "2": {
            "class_type": "ImageBlur",
            "inputs": {"image": ["1", 0], "blur_radius": 1, "sigma": 1.0},
        },
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": prefix}},
    }
