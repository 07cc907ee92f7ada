from __future__ import annotations

import base64
import struct
import zlib
from pathlib import Path
from typing import Any

import pytest

from comfyui_worker.errors import InvalidWorkflowError
from comfyui_worker.settings import ComfySettings, load_comfy
from comfyui_worker.workflow.images import (
    ResolvedImage,
    resolve_image,
    resolve_images,
    sanitise_name,
    sniff,
)
from comfyui_worker.workflow.taskinput import ImageInput
from comfyui_worker.workflow.templates import plan


def png_bytes() -> bytes:
    """A real 1x1 PNG."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    pixels = zlib.compress(b"\x00\xff\x00\x00")
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
    )


PNG = png_bytes()
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + b"\x00" * 20


def settings(tmp_path: Path, **env: str) -> ComfySettings:
    return load_comfy(
        {"COMFYUI_BASE_URL": "http://comfy:8188", "COMFYUI_OUTPUT_DIR": str(tmp_path), **env}
    )


def input_dir(tmp_path: Path) -> tuple[Path, ComfySettings]:
    root = tmp_path / "input"
    (root / "in").mkdir(parents=True)
    (root / "in" / "face.png").write_bytes(PNG)
    return root, settings(tmp_path, COMFYUI_INPUT_DIR=str(root))


def test_base64_image_is_resolved(tmp_path: Path) -> None:
    """Plain base64 decodes to the bytes, a sniffed type and a prefixed name."""
    image = ImageInput(name="face", base64=base64.b64encode(PNG).decode())
    resolved = resolve_image(image, settings(tmp_path), unique_prefix="run1-0")
    assert resolved == ResolvedImage("face", "run1-0-face.png", PNG, "image/png")


def test_data_url_prefix_is_accepted(tmp_path: Path) -> None:
    """A data: URL with base64 is decoded, whitespace ignored."""
    encoded = base64.b64encode(JPEG).decode()
    image = ImageInput(
        name="pic.png", base64=f"data:image/jpeg;base64,{encoded[:10]}\n{encoded[10:]}"
    )
    resolved = resolve_image(image, settings(tmp_path), unique_prefix="t")
    assert resolved.content_type == "image/jpeg"
    assert resolved.upload_name == "t-pic.jpg"


def test_invalid_base64_names_the_image(tmp_path: Path) -> None:
    """Garbage in base64 is an error that names the image."""
    with pytest.raises(InvalidWorkflowError, match="image 'face': 'base64' is not valid"):
        resolve_image(ImageInput(name="face", base64="!!!!"), settings(tmp_path), unique_prefix="t")


def test_non_image_bytes_are_refused(tmp_path: Path) -> None:
    """Bytes without a known image signature are 'not an image'."""
    image = ImageInput(name="doc", base64=base64.b64encode(b"%PDF-1.7 hello").decode())
    with pytest.raises(InvalidWorkflowError, match="image 'doc': is not an image"):
        resolve_image(image, settings(tmp_path), unique_prefix="t")


def test_base64_over_the_limit_is_refused(tmp_path: Path) -> None:
    """The size limit applies to base64 images, with size and limit in the message."""
    image = ImageInput(name="big", base64=base64.b64encode(PNG).decode())
    limited = settings(tmp_path, COMFYUI_MAX_INPUT_IMAGE_BYTES="20")
    with pytest.raises(InvalidWorkflowError, match="over the limit of 20 bytes") as info:
        resolve_image(image, limited, unique_prefix="t")
    assert info.value.details["limit"] == 20


def test_path_image_is_read_from_input_dir(tmp_path: Path) -> None:
    """A relative path is read from COMFYUI_INPUT_DIR."""
    _, config = input_dir(tmp_path)
    resolved = resolve_image(ImageInput(name="face", path="in/face.png"), config, unique_prefix="t")
    assert resolved.data == PNG


def test_path_needs_input_dir(tmp_path: Path) -> None:
    """Without COMFYUI_INPUT_DIR path sources are disabled."""
    with pytest.raises(InvalidWorkflowError, match="COMFYUI_INPUT_DIR is not set"):
        resolve_image(ImageInput(name="f", path="a.png"), settings(tmp_path), unique_prefix="t")


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/etc/passwd", "must be relative"),
        ("../secret.png", "outside COMFYUI_INPUT_DIR"),
        ("in/../../secret.png", "outside COMFYUI_INPUT_DIR"),
        ("in/missing.png", "does not exist"),
        ("in", "is not a file"),
    ],
)
def test_path_cannot_escape_or_miss(tmp_path: Path, path: str, expected: str) -> None:
    """Absolute, escaping, missing and directory paths are refused."""
    (tmp_path / "secret.png").write_bytes(PNG)
    _, config = input_dir(tmp_path)
    with pytest.raises(InvalidWorkflowError, match=expected):
        resolve_image(ImageInput(name="f", path=path), config, unique_prefix="t")


def test_symlink_out_of_input_dir_is_refused(tmp_path: Path) -> None:
    """A symlink pointing outside the input directory does not open a way out."""
    (tmp_path / "secret.png").write_bytes(PNG)
    root, config = input_dir(tmp_path)
    (root / "link.png").symlink_to(tmp_path / "secret.png")
    with pytest.raises(InvalidWorkflowError, match="outside COMFYUI_INPUT_DIR"):
        resolve_image(ImageInput(name="f", path="link.png"), config, unique_prefix="t")


def test_path_over_the_limit_is_refused(tmp_path: Path) -> None:
    """The size limit applies to files before they are read."""
    root = tmp_path / "input"
    root.mkdir()
    (root / "a.png").write_bytes(PNG)
    config = settings(tmp_path, COMFYUI_INPUT_DIR=str(root), COMFYUI_MAX_INPUT_IMAGE_BYTES="10")
    with pytest.raises(InvalidWorkflowError, match=f"is {len(PNG)} bytes, over the limit of 10"):
        resolve_image(ImageInput(name="f", path="a.png"), config, unique_prefix="t")


def test_url_is_disabled_by_default(tmp_path: Path) -> None:
    """URL sources need COMFYUI_ALLOW_INPUT_URLS because of SSRF."""
    with pytest.raises(InvalidWorkflowError) as info:
        resolve_image(
            ImageInput(name="f", url="http://x/a.png"), settings(tmp_path), unique_prefix="t"
        )
    assert "SSRF" in info.value.message
    assert "COMFYUI_ALLOW_INPUT_URLS=true" in info.value.message


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (PNG, ("image/png", ".png")),
        (JPEG, ("image/jpeg", ".jpg")),
        (b"GIF89a" + b"\x00" * 8, ("image/gif", ".gif")),
        (b"RIFF\x00\x00\x00\x00WEBPVP8 ", ("image/webp", ".webp")),
        (b"BM" + b"\x00" * 12, ("image/bmp", ".bmp")),
        (b"II*\x00" + b"\x00" * 8, ("image/tiff", ".tiff")),
        (b"MM\x00*" + b"\x00" * 8, ("image/tiff", ".tiff")),
        (b"RIFF\x00\x00\x00\x00WAVEfmt ", None),
        (b"", None),
    ],
)
def test_sniff_recognises_formats(data: bytes, expected: tuple[str, str] | None) -> None:
    """Formats are told apart by their magic bytes."""
    assert sniff(data) == expected


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("face", "face.png"),
        ("face.JPG", "face.png"),
        ("my photo (1).png", "my_photo__1_.png"),
        ("../../etc/passwd", "_.._etc_passwd.png"),
        ("...", "image.png"),
        ("été", "_t_.png"),
        ("a" * 150, "a" * 96 + ".png"),
    ],
)
def test_sanitise_name(name: str, expected: str) -> None:
    """Names keep safe characters only, no leading dots, the sniffed extension, 100 chars."""
    assert sanitise_name(name, ".png") == expected


def test_resolve_images_keeps_upload_names_unique(tmp_path: Path) -> None:
    """Names that sanitise alike still get distinct upload names."""
    encoded = base64.b64encode(PNG).decode()
    images = [ImageInput(name="a b", base64=encoded), ImageInput(name="a_b", base64=encoded)]
    resolved = resolve_images(images, settings(tmp_path), unique_prefix="wf/1")
    assert [image.upload_name for image in resolved] == ["wf_1-a_b.png", "wf_1-a_b-2.png"]


def resolved(name: str, upload_name: str) -> ResolvedImage:
    return ResolvedImage(name, upload_name, PNG, "image/png")


def test_bind_images_replaces_names_and_placeholders() -> None:
    """Exact names and {{name}} placeholders become upload names (in the render), links untouched."""
    graph: dict[str, dict[str, Any]] = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "{{face}}"}},
        "2": {"class_type": "LoadImage", "inputs": {"image": "style"}},
        "3": {"class_type": "X", "inputs": {"list": ["{{ face }}", {"k": "style"}], "l": ["1", 0]}},
    }
    names = {"face": "t-face.png", "style": "t-style.png"}
    graph = plan(graph, image_names=set(names)).render(names).graph
    assert graph["1"]["inputs"]["image"] == "t-face.png"
    assert graph["2"]["inputs"]["image"] == "t-style.png"
    assert graph["3"]["inputs"] == {"list": ["t-face.png", {"k": "t-style.png"}], "l": ["1", 0]}


def test_bind_images_refuses_unused_images() -> None:
    """An image the graph never mentions is reported by name."""
    graph: dict[str, dict[str, Any]] = {"1": {"class_type": "LoadImage", "inputs": {"image": "x"}}}
    with pytest.raises(InvalidWorkflowError, match="'face' are not used"):
        plan(graph, image_names={"face"}).render({"face": "t-face.png"})
