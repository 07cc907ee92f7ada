"""ComfyUI's folders (output/, temp/, input/): saving outputs, /view and /upload/image.

Saved files are named ``{prefix}_{counter:05}_.{ext}`` (a prefix may hold a subfolder; the
counter follows the highest in the folder); a prefix leaving output/ fails when the node
runs. FakeBigOutput files are never written: /view generates their bytes while streaming.
"""

from __future__ import annotations

import hashlib
import mimetypes
import os
import random
import re
import shutil
import string
import struct
import zlib
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path
from typing import Any

from aiohttp import web

from fakes.comfyui.faults import send_chunks

CHUNK = 1 << 20
_ACTIVE = {
    "text/html",
    "text/html-sandboxed",
    "application/xhtml+xml",
    "text/javascript",
    "text/css",
}


class SaveRefused(Exception):
    """A save path outside the output folder (raised when the node runs, like ComfyUI)."""


@lru_cache(maxsize=8)
def _big_block(filename: str) -> bytes:
    seed = filename.encode()
    return b"".join(
        hashlib.sha256(seed + i.to_bytes(4, "big")).digest() for i in range(CHUNK // 32)
    )


def big_output_chunks(filename: str, size: int, chunk_size: int = CHUNK) -> Iterator[bytes]:
    """The bytes /view serves for a FakeBigOutput file named ``filename`` of ``size`` bytes."""
    if chunk_size != CHUNK:
        raise ValueError("chunk_size must be 1 MiB")
    for start in range(0, size, CHUNK):
        yield _big_block(filename)[: min(CHUNK, size - start)]


def big_output_sha256(filename: str, size: int) -> str:
    """SHA-256 hex digest of the FakeBigOutput file ``filename`` of ``size`` bytes."""
    digest = hashlib.sha256()
    for chunk in big_output_chunks(filename, size):
        digest.update(chunk)
    return digest.hexdigest()


def png(width: int, height: int, color: int, text: dict[str, str]) -> bytes:
    """A solid-colour RGB PNG (at most 512 px a side) with tEXt metadata."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data)
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    width, height = max(1, min(width, 512)), max(1, min(height, 512))
    row = b"\x00" + bytes(((color >> 16) & 255, (color >> 8) & 255, color & 255)) * width
    out = b"\x89PNG\r\n\x1a\n" + chunk(
        b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    )
    for key, value in text.items():
        out += chunk(b"tEXt", key.encode("latin-1") + b"\x00" + value.encode())
    return out + chunk(b"IDAT", zlib.compress(row * height, 1)) + chunk(b"IEND", b"")


class Files:
    """The folders under ``root`` and every file operation of the fake."""

    def __init__(self, root: Path) -> None:
        self.folders = {kind: os.path.abspath(root / kind) for kind in ("output", "temp", "input")}
        for folder in self.folders.values():
            os.makedirs(folder, exist_ok=True)
        self.virtual: dict[str, int] = {}  # absolute path -> size of a FakeBigOutput file
        self.uploads: list[dict[str, str]] = []

    def _target(self, prefix: str, kind: str = "output") -> tuple[str, str, str, int]:
        """(folder, name, subfolder, first free counter) for a filename_prefix."""
        base = self.folders[kind]
        subfolder, name = os.path.split(os.path.normpath(prefix))
        folder = os.path.abspath(os.path.join(base, subfolder))
        if (common := os.path.commonpath((base, folder))) != base:
            raise SaveRefused(
                "**** ERROR: Saving image outside the output folder is not allowed.\n"
                f" full_output_folder: {folder}\n         output_dir: {base}\n"
                f"         commonpath: {common}"
            )
        os.makedirs(folder, exist_ok=True)
        virtual = [os.path.basename(p) for p in self.virtual if os.path.dirname(p) == folder]
        pattern = re.compile(re.escape(name) + r"_(\d+)_")
        used = [int(m.group(1)) for m in map(pattern.match, os.listdir(folder) + virtual) if m]
        return folder, name, subfolder, max(used, default=0) + 1

    def save_pngs(
        self, prefix: str | None, images: Any, text: dict[str, str]
    ) -> list[dict[str, str]]:
        """One PNG per image of the batch; ``prefix=None`` saves previews in temp/."""
        kind = "output" if prefix is not None else "temp"
        prefix = prefix or "ComfyUI_temp_" + "".join(random.choices(string.ascii_lowercase, k=5))
        folder, name, subfolder, counter = self._target(prefix, kind)
        data = png(images.width, images.height, images.color, text)
        names = [f"{name}_{counter + index:05}_.png" for index in range(images.batch)]
        for filename in names:
            Path(folder, filename).write_bytes(data)
        return [{"filename": n, "subfolder": subfolder, "type": kind} for n in names]

    def save_bytes(self, prefix: str, ext: str, data: bytes) -> dict[str, str]:
        """One output file holding ``data``."""
        folder, name, subfolder, counter = self._target(prefix)
        Path(folder, filename := f"{name}_{counter:05}_{ext}").write_bytes(data)
        return {"filename": filename, "subfolder": subfolder, "type": "output"}

    def save_virtual(self, prefix: str, size: int) -> dict[str, str]:
        """A FakeBigOutput file: only its size is kept, /view generates the bytes."""
        folder, name, subfolder, counter = self._target(prefix)
        self.virtual[os.path.join(folder, filename := f"{name}_{counter:05}_.bin")] = size
        return {"filename": filename, "subfolder": subfolder, "type": "output"}

    def clear_temp(self) -> None:
        """Empty temp/ (ComfyUI does so when it starts)."""
        shutil.rmtree(self.folders["temp"], ignore_errors=True)
        os.makedirs(self.folders["temp"])

    def input_path(self, name: str) -> Path:
        """Where a LoadImage ``name`` (``cat.png``, ``sub/cat.png``) is read from."""
        return Path(self.folders["input"], name)

    def input_images(self) -> list[str]:
        """Image files directly in input/ (what LoadImage offers)."""
        names = [p.name for p in Path(self.folders["input"]).iterdir() if p.is_file()]
        return sorted(n for n in names if (mimetypes.guess_type(n)[0] or "").startswith("image/"))

    def image_size(self, name: str) -> tuple[int, int]:
        """Width and height of an input PNG (512x512 for anything else)."""
        head = self.input_path(name).read_bytes()[:24]
        if head.startswith(b"\x89PNG\r\n\x1a\n") and len(head) == 24:
            width, height = struct.unpack(">II", head[16:24])
            return int(width), int(height)
        return 512, 512

    def fingerprint(self, name: str) -> str | None:
        """Hash of an input file, so a changed file is not served from the cache."""
        path = self.input_path(name)
        return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None

    async def view(self, request: web.Request) -> web.StreamResponse:
        """GET /view?filename=&subfolder=&type= (streamed)."""
        query = request.rel_url.query
        if "filename" not in query:
            return web.Response(status=404)
        filename, folder = query["filename"], self.folders.get(query.get("type", "output"))
        if not filename or filename.startswith("/") or ".." in filename or folder is None:
            return web.Response(status=400)
        if "subfolder" in query:
            inner = os.path.join(folder, query["subfolder"])
            if os.path.commonpath((os.path.abspath(inner), folder)) != folder:
                return web.Response(status=403)
            folder = inner
        path = os.path.abspath(os.path.join(folder, filename := os.path.basename(filename)))
        if os.path.isfile(path):
            size, chunks = os.path.getsize(path), _read(path)
        elif path in self.virtual:
            size, chunks = self.virtual[path], big_output_chunks(filename, self.virtual[path])
        else:
            return web.Response(status=404)
        content_type = mimetypes.guess_type(filename)[0] or "application/octet-stream"
        content_type = "application/octet-stream" if content_type in _ACTIVE else content_type
        headers = {"Content-Disposition": f'filename="{filename}"', "Content-Type": content_type}
        response = web.StreamResponse(headers=headers)
        response.content_length = size
        await send_chunks(request, response, [] if request.method == "HEAD" else chunks)
        return response

    async def upload(self, request: web.Request) -> web.StreamResponse:
        """POST /upload/image (multipart: image, overwrite, type, subfolder)."""
        form = await request.post()
        kind, image = str(form.get("type") or "input"), form.get("image")
        if kind not in self.folders:  # ComfyUI crashes on an unknown type: a 500
            raise ValueError(f"unknown upload type {kind!r}")
        if not isinstance(image, web.FileField) or not image.filename:
            return web.Response(status=400)
        subfolder, base, filename = (
            str(form.get("subfolder", "")),
            self.folders[kind],
            image.filename,
        )
        folder = os.path.join(base, os.path.normpath(subfolder))
        if os.path.commonpath((base, os.path.abspath(os.path.join(folder, filename)))) != base:
            return web.Response(status=400)
        os.makedirs(folder, exist_ok=True)
        data, (stem, ext), copies = image.file.read(), os.path.splitext(filename), 0
        path = Path(folder, filename)
        while (
            form.get("overwrite") not in ("true", "1")
            and path.exists()
            and path.read_bytes() != data
        ):
            copies += 1  # a different file by that name: try "name (1).png", ...
            path = Path(folder, filename := f"{stem} ({copies}){ext}")
        path.write_bytes(data)
        self.uploads.append(answer := {"name": filename, "subfolder": subfolder, "type": kind})
        return web.json_response(answer)


def _read(path: str) -> Iterator[bytes]:
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            yield chunk
