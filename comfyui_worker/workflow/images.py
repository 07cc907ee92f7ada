"""Input images: read them from their source, check them, and bind them to the graph.

Uploading is done elsewhere; this module turns an ``ImageInput`` into bytes with a
safe, per-task unique file name, and rewrites the graph's references to that name.
Each source is guarded: paths cannot leave ``COMFYUI_INPUT_DIR``, URLs are off unless
allowed (SSRF), and every source obeys ``COMFYUI_MAX_INPUT_IMAGE_BYTES``.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import PurePosixPath, PureWindowsPath
from typing import Any

import structlog

from comfyui_worker.errors import InvalidWorkflowError
from comfyui_worker.settings import ComfySettings
from comfyui_worker.workflow.taskinput import ImageInput
from comfyui_worker.workflow.urlfetch import FETCH_FAILED, Fetcher, Subject, describe_url

log = structlog.get_logger("comfyui_worker.workflow.images")

MAX_NAME_CHARS = 100
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
MAX_SETTING = "COMFYUI_MAX_INPUT_IMAGE_BYTES"
_DATA_URL = re.compile(r"data:([^,;]*)(;[^,]*)?,", re.IGNORECASE)

# (magic prefix, offset, content type, file extension)
_SIGNATURES: tuple[tuple[bytes, int, str, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", 0, "image/png", ".png"),
    (b"\xff\xd8\xff", 0, "image/jpeg", ".jpg"),
    (b"GIF87a", 0, "image/gif", ".gif"),
    (b"GIF89a", 0, "image/gif", ".gif"),
    (b"WEBP", 8, "image/webp", ".webp"),
    (b"BM", 0, "image/bmp", ".bmp"),
    (b"II*\x00", 0, "image/tiff", ".tiff"),
    (b"MM\x00*", 0, "image/tiff", ".tiff"),
)
_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".gif", ".webp", ".bmp", ".tif", ".tiff"}


@dataclass(frozen=True)
class ResolvedImage:
    """An input image's bytes and the unique file name to upload them under."""

    name: str
    upload_name: str
    data: bytes
    content_type: str

    def __repr__(self) -> str:
        return (
            f"ResolvedImage(name={self.name!r}, upload_name={self.upload_name!r}, "
            f"content_type={self.content_type!r}, size={len(self.data)})"
        )


def _error(image: ImageInput, message: str, **details: Any) -> InvalidWorkflowError:
    """Build an error that names the image and its source."""
    return InvalidWorkflowError(
        f"image '{image.name}': {message}", image=image.name, source=image.source, **details
    )


def sniff(data: bytes) -> tuple[str, str] | None:
    """Identify an image format from its magic bytes: (content type, extension)."""
    for magic, offset, content_type, extension in _SIGNATURES:
        if data[offset : offset + len(magic)] == magic:
            if extension == ".webp" and not data.startswith(b"RIFF"):
                continue
            return content_type, extension
    return None


def sanitise_name(name: str, extension: str) -> str:
    """Make a safe file name ending in ``extension`` (at most 100 characters)."""
    stem = name
    suffix = PurePosixPath(PureWindowsPath(name).name).suffix
    if suffix.lower() in _IMAGE_SUFFIXES:
        stem = name[: -len(suffix)]
    stem = _UNSAFE.sub("_", stem).lstrip(".") or "image"
    return stem[: MAX_NAME_CHARS - len(extension)] + extension


def _check_size(image: ImageInput, size: int, limit: int, setting: str) -> None:
    """Refuse an image over the limit, saying both numbers and the setting that sets it."""
    if size > limit:
        raise _error(
            image,
            f"is {size} bytes, over the limit of {limit} bytes ({setting})",
            size=size,
            limit=limit,
        )


def decode_base64(image: ImageInput, text: str, limit: int, setting: str = MAX_SETTING) -> bytes:
    """Decode base64, with or without a ``data:image/...;base64,`` prefix, up to ``limit``."""
    text = text.strip()
    match = _DATA_URL.match(text)
    if match:
        if "base64" not in (match[2] or "").lower():
            raise _error(image, "a data: URL must be base64-encoded (';base64,')")
        text = text[match.end() :]
    text = re.sub(r"\s+", "", text)
    _check_size(image, len(text) * 3 // 4 - text.count("="), limit, setting)
    text += "=" * (-len(text) % 4)
    try:
        if "-" in text or "_" in text:
            return base64.b64decode(text, altchars=b"-_", validate=True)
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise _error(image, f"'base64' is not valid base64 ({exc})") from None


def _from_path(image: ImageInput, relative: str, settings: ComfySettings) -> bytes:
    """Read a file under ``COMFYUI_INPUT_DIR``; nothing outside it is reachable."""
    if settings.input_dir is None:
        raise _error(image, "COMFYUI_INPUT_DIR is not set, path sources are disabled")
    if PurePosixPath(relative).is_absolute() or PureWindowsPath(relative).is_absolute():
        raise _error(image, f"path '{relative}' must be relative to COMFYUI_INPUT_DIR")
    try:
        root = settings.input_dir.resolve()
        path = (root / relative).resolve()
    except (OSError, ValueError, RuntimeError) as exc:
        raise _error(image, f"path '{relative}' is not usable: {exc}") from None
    if not path.is_relative_to(root):
        raise _error(image, f"path '{relative}' points outside COMFYUI_INPUT_DIR")
    if not path.is_file():
        why = "is not a file" if path.exists() else "does not exist"
        raise _error(image, f"path '{relative}' {why} in COMFYUI_INPUT_DIR ({root})")
    _check_size(image, path.stat().st_size, settings.max_input_image_bytes, MAX_SETTING)
    with path.open("rb") as handle:
        return handle.read(settings.max_input_image_bytes + 1)


def _from_url(image: ImageInput, url: str, settings: ComfySettings, fetcher: Fetcher) -> bytes:
    """Download an image through the SSRF-safe fetcher, enforcing the size limit."""
    if not settings.allow_input_urls:
        raise _error(
            image,
            "URL sources are disabled: letting task inputs make the worker fetch arbitrary "
            "URLs is a server-side request forgery (SSRF) risk; set "
            "COMFYUI_ALLOW_INPUT_URLS=true to allow them",
        )
    subject = Subject(
        f"image '{image.name}'",
        "COMFYUI_MAX_INPUT_IMAGE_BYTES",
        {"image": image.name, "source": image.source},
    )
    data, _final = fetcher.fetch(url, limit=settings.max_input_image_bytes, subject=subject)
    return data


def _read(image: ImageInput, settings: ComfySettings, fetcher: Fetcher) -> bytes:
    """Get the bytes from whichever source the image has."""
    if image.base64 is not None:
        return decode_base64(image, image.base64, settings.max_input_image_bytes)
    if image.path is not None:
        return _from_path(image, image.path, settings)
    return _from_url(image, image.url or "", settings, fetcher)


def resolve_image(
    image: ImageInput,
    settings: ComfySettings,
    *,
    unique_prefix: str,
    fetcher: Fetcher | None = None,
) -> ResolvedImage:
    """Fetch and check one image; name it ``{unique_prefix}-{sanitised name}``.

    The prefix (the attempt's prompt id, unique across the fleet and over time) keeps
    every other task, queued or running, retried or a reused job id, from overwriting
    this one's inputs in ComfyUI's input directory. Blocking: call it from a thread.
    """
    data = _read(image, settings, fetcher or Fetcher(settings))
    _check_size(image, len(data), settings.max_input_image_bytes, MAX_SETTING)
    kind = sniff(data)
    if kind is None and image.url is not None:  # as unspecific as any other fetch failure
        log.warning("images.url_not_an_image", image=image.name, url=describe_url(image.url))
        raise _error(image, f"url '{describe_url(image.url)}' {FETCH_FAILED}")
    if kind is None:
        raise _error(image, "is not an image (supported: PNG, JPEG, WEBP, GIF, BMP, TIFF)")
    content_type, extension = kind
    safe_name = sanitise_name(image.name, extension)
    prefix = _UNSAFE.sub("_", unique_prefix).lstrip(".")
    return ResolvedImage(
        name=image.name,
        upload_name=f"{prefix}-{safe_name}" if prefix else safe_name,
        data=data,
        content_type=content_type,
    )


def resolve_images(
    images: Iterable[ImageInput],
    settings: ComfySettings,
    *,
    unique_prefix: str,
    fetcher: Fetcher | None = None,
) -> list[ResolvedImage]:
    """Resolve every image; names that sanitise alike get ``-2``, ``-3``... suffixes."""
    resolved: list[ResolvedImage] = []
    taken: set[str] = set()
    for image in images:
        item = resolve_image(image, settings, unique_prefix=unique_prefix, fetcher=fetcher)
        upload_name, counter = item.upload_name, 1
        while upload_name in taken:
            counter += 1
            stem, dot, extension = item.upload_name.rpartition(".")
            upload_name = f"{stem}-{counter}{dot}{extension}"
        taken.add(upload_name)
        resolved.append(ResolvedImage(item.name, upload_name, item.data, item.content_type))
    return resolved
