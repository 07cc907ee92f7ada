"""How a job's image travels: inside the job when small, else staged in the shared input dir.

A job's input is a LittleHorse variable, and LittleHorse keeps a record under ~1 MB,
so a phone photo (3-12 MB) cannot ride along as base64. Larger images are written to
``<COMFYUI_INPUT_DIR>/uploads/<sha256>/<name>`` (a directory the workers read as their
own ``COMFYUI_INPUT_DIR``) and the job carries a ``path`` source. The name is the
content's hash, so the same bytes submitted again (``--id``, a retry) are the same input.
Files are written whole (temp file, then rename) and never removed by the job side:
a retry reads them again.
"""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

from comfyui_worker.errors import InvalidWorkflowError
from comfyui_worker.outputs.store import disk_errors, stream_to_file
from comfyui_worker.workflow.images import sanitise_name, sniff

INLINE_MAX_BYTES = 512 * 1024  # base64 makes it ~683 KiB: with the rest, under the record
UPLOADS = "uploads"


def image_source(name: str, data: bytes, input_dir: Path | None) -> dict[str, str]:
    """The ``images`` entry for ``data``: base64 if small, else a staged ``path``."""
    if len(data) <= INLINE_MAX_BYTES:
        return {"name": name, "base64": base64.b64encode(data).decode("ascii")}
    if input_dir is None:
        raise InvalidWorkflowError(
            f"image {name!r} is {_mb(len(data))}, too large to travel inside a job "
            f"(over {_mb(INLINE_MAX_BYTES)}; LittleHorse keeps records under ~1 MB): set "
            "COMFYUI_INPUT_DIR here to the directory the workers read as their "
            "COMFYUI_INPUT_DIR, and large images are passed through it",
            image=name,
            size=len(data),
        )
    return {"name": name, "path": stage(name, data, input_dir)}


def stage(name: str, data: bytes, input_dir: Path) -> str:
    """Write ``data`` under the input dir (whole or not at all); its path relative to it."""
    digest = hashlib.sha256(data).hexdigest()
    kind = sniff(data)
    relative = f"{UPLOADS}/{digest[:32]}/{sanitise_name(name, kind[1] if kind else '.bin')}"
    target = input_dir / relative
    with disk_errors(target, "stage the image in COMFYUI_INPUT_DIR as"):
        if not _holds(target, digest):
            target.parent.mkdir(parents=True, exist_ok=True)
            stream_to_file(target, [data], fsync=True, size_hint=len(data))
    return relative


def _holds(target: Path, digest: str) -> bool:
    """Whether ``target`` already holds these very bytes (staged by an earlier submission)."""
    if not target.is_file():
        return False
    return hashlib.sha256(target.read_bytes()).hexdigest() == digest


def _mb(size: int) -> str:
    return f"{size / 1e6:.1f} MB"
