"""What a history entry's ``outputs`` holds, and where each file goes.

ComfyUI reports files under many keys (images, gifs, video, audio, latents, 3d...),
text as lists of strings, and anything else as plain values. ``collect`` splits
them, tolerating any shape ComfyUI (or a custom node) may send. ``plan`` gives each
file a safe relative key under the task's run location, rejecting anything that
could escape it, and keeping two files that would land on one name apart.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from comfyui_worker.bounds import safe_string
from comfyui_worker.errors import OutputRejectedError

MANIFEST = "manifest.json"
JOURNAL = ".comfyui-worker-journal.jsonl"
RESERVED = frozenset({MANIFEST, JOURNAL})
MAX_NAME_BYTES = 255  # a longer path component no file system stores
FileId = tuple[str, str, str]  # (type, subfolder, filename): one file in ComfyUI


@dataclass(frozen=True)
class OutputRef:
    """One file ComfyUI reported: where it lives in ComfyUI and which node made it."""

    node_id: str
    key: str
    filename: str
    subfolder: str
    comfy_type: str

    @property
    def file_id(self) -> FileId:
        """Which ComfyUI file this names (two nodes may name the same file)."""
        return (self.comfy_type, self.subfolder, self.filename)


@dataclass(frozen=True)
class Collected:
    """Everything a history entry's ``outputs`` holds, split into files and values."""

    files: list[OutputRef]
    text: dict[str, list[str]]
    values: dict[str, dict[str, Any]]
    skipped_temp: int


def collect(outputs: object, *, include_temp: bool) -> Collected:
    """Find every file under every key; keep text and other values; skip temp unless asked."""
    files: list[OutputRef] = []
    text: dict[str, list[str]] = {}
    values: dict[str, dict[str, Any]] = {}
    skipped = 0
    for node_id, node_out in _items(outputs):
        if not isinstance(node_out, dict):  # a custom node may report anything
            values[node_id] = {"value": node_out}
            continue
        for key, value in node_out.items():
            if _is_file_list(value):
                refs = [_ref(node_id, str(key), item) for item in value]
                kept = [r for r in refs if include_temp or r.comfy_type != "temp"]
                skipped += len(refs) - len(kept)
                files.extend(kept)
            elif key == "text" and isinstance(value, list):
                text[node_id] = [v if isinstance(v, str) else str(v) for v in value]
            else:
                values.setdefault(node_id, {})[str(key)] = value
    return Collected(files, text, values, skipped)


def _items(outputs: object) -> Iterable[tuple[str, Any]]:
    if not isinstance(outputs, dict):
        return []
    return ((str(node_id), node_out) for node_id, node_out in outputs.items())


def _is_file_list(value: Any) -> bool:
    return (
        isinstance(value, list)
        and bool(value)
        and all(isinstance(v, dict) and isinstance(v.get("filename"), str) for v in value)
    )


def _ref(node_id: str, key: str, item: dict[str, Any]) -> OutputRef:
    return OutputRef(
        node_id=node_id,
        key=key,
        filename=str(item["filename"]),
        subfolder=str(item.get("subfolder") or ""),
        comfy_type=str(item.get("type") or "output"),
    )


def plan(refs: list[OutputRef]) -> list[tuple[OutputRef, str]]:
    """A safe, unique relative key for each ref; the same ComfyUI file keeps one key.

    Two different files that map to one name (an ``output`` subfolder called ``temp``
    beside a temp preview, or an output named ``manifest.json``) both keep their
    bytes: the later one gets ``-2``, ``-3``... before its extension.
    """
    by_file: dict[FileId, str] = {}
    taken = set(RESERVED)
    planned = []
    for ref in refs:
        if ref.file_id not in by_file:
            by_file[ref.file_id] = _unique(relative_key(ref), taken)
            taken.add(by_file[ref.file_id])
        planned.append((ref, by_file[ref.file_id]))
    return planned


def _unique(key: str, taken: set[str]) -> str:
    if key not in taken:
        return key
    path = PurePosixPath(key)
    counter = 2
    while (candidate := str(path.with_name(f"{path.stem}-{counter}{path.suffix}"))) in taken:
        counter += 1
    return candidate


def relative_key(ref: OutputRef) -> str:
    """Where ``ref`` goes relative to the run location; rejects anything that could escape.

    Files of type ``output`` keep their subfolder; other types (``temp``) get a top
    folder of their own.
    """
    parts = [] if ref.comfy_type == "output" else [_safe_part(ref.comfy_type, ref, "type")]
    if ref.subfolder:
        sub = PurePosixPath(ref.subfolder.replace("\\", "/"))
        if sub.is_absolute():
            raise rejected(ref, "subfolder is an absolute path")
        parts += [_safe_part(p, ref, "subfolder") for p in sub.parts]
    parts.append(_safe_part(ref.filename, ref, "filename"))
    if len(parts) > 1 and parts[0] in RESERVED:  # a file of that name is renamed instead
        raise rejected(ref, f"folder {parts[0]!r} is a name the worker keeps for itself")
    return "/".join(parts)


def _safe_part(part: str, ref: OutputRef, field: str) -> str:
    bad = (
        not part
        or part in (".", "..")
        or "/" in part
        or "\\" in part
        or "\x00" in part
        or (len(part) > 1 and part[1] == ":")
    )
    if bad:
        raise rejected(ref, f"unsafe {field} {part!r}")
    if safe_string(part) != part:
        raise rejected(ref, f"{field} is not valid Unicode")
    if len(part.encode("utf-8")) > MAX_NAME_BYTES:
        raise rejected(ref, f"{field} is longer than {MAX_NAME_BYTES} bytes")
    return part


def rejected(ref: OutputRef, reason: str, **details: Any) -> OutputRejectedError:
    """The one way to refuse an output: names its node, output key, subfolder and file."""
    return OutputRejectedError(
        f"output of node {ref.node_id} ({ref.key}) {ref.subfolder!r}/{ref.filename!r} "
        f"rejected: {reason}",
        node_id=ref.node_id,
        key=ref.key,
        filename=ref.filename,
        subfolder=ref.subfolder,
        **details,
    )


@dataclass(frozen=True)
class Stored:
    """One file as the store holds it."""

    key: str  # relative to the run location, "/"-separated
    location: str  # a local path or an object URL
    size_bytes: int
    sha256: str
    media_type: str
    url: str | None = None  # a presigned https GET URL (object stores, when configured)
