"""Turn a history entry's outputs into files on disk, safely and completely.

Each file streams into a temporary file beside its destination while it is hashed,
then is renamed into place, so a reader never sees half a file and memory stays flat.
A journal records finished files so a retried task does not fetch them twice, and
``manifest.json`` is written last so its presence means the set is complete.
ComfyUI's own files are never touched (a cached re-run points at the same names).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import mimetypes
import os
import tempfile
import threading
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import structlog

from comfyui_worker.client import ComfyClient
from comfyui_worker.errors import OutputRejectedError, WorkerShuttingDownError
from comfyui_worker.filesink import FileSink

log = structlog.get_logger("comfyui_worker.outputs")

CHUNK_BYTES = 1024 * 1024
JOURNAL = ".comfyui-worker-journal.jsonl"
MANIFEST = "manifest.json"
MAX_TEXT_BYTES = 256 * 1024  # text kept in the task result; the manifest keeps it all


@dataclass(frozen=True)
class OutputRef:
    """One file ComfyUI reported: where it lives in ComfyUI and which node made it."""

    node_id: str
    key: str
    filename: str
    subfolder: str
    comfy_type: str


@dataclass(frozen=True)
class SavedOutput:
    """A file saved locally, as it appears in the result."""

    node_id: str
    key: str
    filename: str
    subfolder: str
    comfy_type: str
    path: str
    size_bytes: int
    sha256: str
    media_type: str
    reused: bool = False


@dataclass(frozen=True)
class Collected:
    """Everything a history entry's ``outputs`` holds, split into files and values."""

    files: list[OutputRef]
    text: dict[str, list[str]]
    values: dict[str, dict[str, Any]]
    skipped_temp: int


def collect(outputs: dict[str, Any], *, include_temp: bool) -> Collected:
    """Find every file under every key (images, gifs, video, audio, latents, 3d, ...)."""
    files: list[OutputRef] = []
    text: dict[str, list[str]] = {}
    values: dict[str, dict[str, Any]] = {}
    skipped = 0
    for node_id, node_out in (outputs or {}).items():
        for key, value in (node_out or {}).items():
            if _is_file_list(value):
                for item in value:
                    ref = _ref(str(node_id), key, item)
                    if ref.comfy_type == "temp" and not include_temp:
                        skipped += 1
                    else:
                        files.append(ref)
            elif key == "text" and isinstance(value, list):
                text[str(node_id)] = [str(v) for v in value]
            else:
                values.setdefault(str(node_id), {})[key] = value
    return Collected(files, text, values, skipped)


def _is_file_list(value: Any) -> bool:
    return (
        isinstance(value, list)
        and bool(value)
        and all(isinstance(v, dict) and "filename" in v for v in value)
    )


def _ref(node_id: str, key: str, item: dict[str, Any]) -> OutputRef:
    return OutputRef(
        node_id=node_id,
        key=key,
        filename=str(item.get("filename", "")),
        subfolder=str(item.get("subfolder") or ""),
        comfy_type=str(item.get("type") or "output"),
    )


def destination(run_dir: Path, ref: OutputRef) -> Path:
    """Where ``ref`` goes under ``run_dir``; rejects anything that could escape it."""
    parts = [] if ref.comfy_type == "output" else [_safe_part(ref.comfy_type, ref, "type")]
    if ref.subfolder:
        sub = PurePosixPath(ref.subfolder.replace("\\", "/"))
        if sub.is_absolute():
            raise _rejected(ref, "subfolder is an absolute path")
        parts += [_safe_part(p, ref, "subfolder") for p in sub.parts]
    parts.append(_safe_part(ref.filename, ref, "filename"))
    target = run_dir.joinpath(*parts)
    if not target.resolve().is_relative_to(run_dir.resolve()):
        raise _rejected(ref, "path leaves the output directory")
    return target


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
        raise _rejected(ref, f"unsafe {field} {part!r}")
    return part


def _rejected(ref: OutputRef, reason: str) -> OutputRejectedError:
    return OutputRejectedError(
        f"output of node {ref.node_id} ({ref.key}) {ref.subfolder!r}/{ref.filename!r} "
        f"rejected: {reason}",
        node_id=ref.node_id,
        key=ref.key,
        filename=ref.filename,
        subfolder=ref.subfolder,
    )


class Downloader:
    """Saves refs under one run directory, reusing files a previous attempt finished."""

    def __init__(
        self,
        client: ComfyClient,
        run_dir: Path,
        *,
        max_bytes: int,
        fsync: bool,
        abort: threading.Event | None = None,
    ) -> None:
        self.abort = abort or threading.Event()
        self.client = client
        self.run_dir = run_dir
        self.max_bytes = max_bytes
        self.fsync = fsync
        self._journal = _read_journal(run_dir / JOURNAL)

    def save_all(self, refs: list[OutputRef]) -> list[SavedOutput]:
        """Validate every destination first, then download each file once."""
        targets = [(ref, destination(self.run_dir, ref)) for ref in refs]
        self.run_dir.mkdir(parents=True, exist_ok=True)
        done: dict[Path, SavedOutput] = {}
        saved = []
        for ref, target in targets:
            if self.abort.is_set():
                raise WorkerShuttingDownError(
                    f"worker shut down after saving {len(done)} of {len(targets)} files"
                )
            if target not in done:
                done[target] = self._save(ref, target)
            saved.append(_for_ref(done[target], ref))
        return saved

    def _save(self, ref: OutputRef, target: Path) -> SavedOutput:
        reused = self._reusable(target)
        if reused is not None:
            log.info("comfy.output_reused", filename=ref.filename, path=str(target))
            return _for_ref(reused, ref, reused=True)
        target.parent.mkdir(parents=True, exist_ok=True)
        for attempt in self.client.retrying():
            with attempt:
                size, digest, media_type = self._stream(ref, target)
        record = SavedOutput(
            **asdict(ref), path=str(target), size_bytes=size, sha256=digest, media_type=media_type
        )
        self._remember(record)
        return record

    def _stream(self, ref: OutputRef, target: Path) -> tuple[int, str, str]:
        """Stream one file to a temp file beside ``target``, hashing; rename when whole."""
        fd, tmp_name = tempfile.mkstemp(
            dir=target.parent, prefix=f".{target.name}.", suffix=".part"
        )
        try:
            with self.client.view(ref.filename, ref.subfolder, ref.comfy_type) as stream:
                self._check_size(ref, stream.content_length or 0)
                sink = FileSink(fd, fsync=self.fsync, expected_bytes=stream.content_length)
                try:
                    size = 0
                    for chunk in stream.chunks:
                        size += len(chunk)
                        self._check_size(ref, size)
                        sink.write(chunk)
                    digest = sink.finish()
                finally:
                    sink.abandon()
            os.fchmod(fd, 0o644)  # mkstemp's 0600 would hide it from readers
        except BaseException:
            os.close(fd)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp_name)
            raise
        os.close(fd)
        os.replace(tmp_name, target)
        return size, digest, _media_type(stream.content_type, ref.filename)

    def _check_size(self, ref: OutputRef, size: int) -> None:
        if size > self.max_bytes:
            raise _rejected(
                ref,
                f"{size} bytes is over the limit of {self.max_bytes} (COMFYUI_MAX_OUTPUT_BYTES)",
            )

    def _reusable(self, target: Path) -> SavedOutput | None:
        """A file an earlier attempt saved, still there and matching its sha256."""
        known = self._journal.get(str(target))
        if known is None or not target.is_file() or target.stat().st_size != known.size_bytes:
            return None
        return known if sha256_file(target) == known.sha256 else None

    def _remember(self, record: SavedOutput) -> None:
        self._journal[record.path] = record
        with (self.run_dir / JOURNAL).open("a", encoding="utf-8") as journal:
            journal.write(json.dumps(asdict(record)) + "\n")


def _for_ref(saved: SavedOutput, ref: OutputRef, *, reused: bool | None = None) -> SavedOutput:
    fields = {**asdict(saved), **asdict(ref)}
    if reused is not None:
        fields["reused"] = reused
    return SavedOutput(**fields)


def _read_journal(path: Path) -> dict[str, SavedOutput]:
    """Finished files from earlier attempts; a torn last line is ignored."""
    records: dict[str, SavedOutput] = {}
    if not path.is_file():
        return records
    for line in path.read_text(encoding="utf-8").splitlines():
        with contextlib.suppress(ValueError, TypeError):
            record = SavedOutput(**json.loads(line))
            records[record.path] = record
    return records


def sha256_file(path: Path) -> str:
    """Hash a file in chunks (flat memory)."""
    digest = hashlib.sha256()
    with path.open("rb") as source:
        while chunk := source.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def _media_type(header: str | None, filename: str) -> str:
    guessed = mimetypes.guess_type(filename)[0]
    if header and header.split(";")[0].strip() not in ("", "application/octet-stream"):
        return header.split(";")[0].strip()
    return guessed or "application/octet-stream"


def bounded_text(text: dict[str, list[str]]) -> tuple[dict[str, list[str]], bool]:
    """Keep text outputs under MAX_TEXT_BYTES for the task result; say if cut."""
    kept: dict[str, list[str]] = {}
    budget = MAX_TEXT_BYTES
    for node_id, items in text.items():
        for item in items:
            size = len(item.encode("utf-8"))
            if size > budget:
                return kept, True
            kept.setdefault(node_id, []).append(item)
            budget -= size
    return kept, False


def write_manifest(run_dir: Path, manifest: dict[str, Any], *, fsync: bool) -> Path:
    """Write ``manifest.json`` atomically, last: its presence means the set is complete."""
    run_dir.mkdir(parents=True, exist_ok=True)
    target = run_dir / MANIFEST
    fd, tmp_name = tempfile.mkstemp(dir=run_dir, prefix=".manifest.", suffix=".part")
    with os.fdopen(fd, "w", encoding="utf-8") as sink:
        json.dump(manifest, sink, indent=2, sort_keys=True)
        if fsync:
            sink.flush()
            os.fsync(sink.fileno())
    os.replace(tmp_name, target)
    if fsync:
        dir_fd = os.open(run_dir, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    return target
