"""Model files in ``COMFYUI_MODELS_DIR``: one lock per file, downloads that are never half.

A download streams into ``.<name>.part`` beside its destination (a name ComfyUI lists
under no model extension), hashing as it writes; then size and sha256 are checked,
the file is fsynced and renamed, and the directory fsynced. A wrong sha256 removes the
partial file; a cut or a kill -9 leaves it, and the next download resumes from it
(``Range``), re-hashing what is already there.

Each model has a lock file (``.comfyui-worker/locks/``), held shared while a task uses
the model and exclusive while it is downloaded or evicted (``flock``: it works across
threads and processes, and dies with its process). So two tasks that need one file
download it once, and eviction never removes a model a task is about to run.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import structlog

from comfyui_worker.errors import InvalidWorkflowError, ModelSourceError, ModelStorageError
from comfyui_worker.models.ledger import STATE_DIR, Entry, Ledger, victims
from comfyui_worker.models.sources import Body, RestartDownload, Sources
from comfyui_worker.outputs.filesink import FileSink
from comfyui_worker.outputs.store import disk_errors, fsync_dir
from comfyui_worker.workflow.modeldecl import ModelDecl

log = structlog.get_logger("comfyui_worker.models.files")

READ_BYTES = 1024 * 1024
SPARE_BYTES = 64 * 1024 * 1024  # free space kept beyond the file itself


@dataclass(frozen=True)
class Downloaded:
    """What one download did."""

    size_bytes: int
    seconds: float
    resumed_from: int
    evicted: tuple[str, ...] = ()


class Hold:
    """A model's lock file, held shared (in use) or exclusive (being written or removed)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file: IO[bytes] = open(path, "a+b")  # noqa: SIM115 (closed by release)

    def shared(self) -> Hold:
        """Wait until nobody writes or removes the model, then hold it as in use."""
        fcntl.flock(self._file, fcntl.LOCK_SH)
        return self

    def exclusive(self) -> Hold:
        """Wait until nobody else holds the model (to download it)."""
        fcntl.flock(self._file, fcntl.LOCK_UN)  # never upgrade in place: that can deadlock
        fcntl.flock(self._file, fcntl.LOCK_EX)
        return self

    def try_exclusive(self) -> bool:
        """Hold the model alone if nobody else holds it now (to evict it)."""
        try:
            fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def release(self) -> None:
        """Let go (closing the file drops the lock)."""
        self._file.close()


class ModelFiles:
    """The models directory as the worker sees it (``COMFYUI_MODELS_DIR``)."""

    def __init__(
        self,
        root: Path,
        sources: Sources,
        *,
        max_bytes: int | None = None,
        timeout_s: float = 3600.0,
        fsync: bool = True,
    ) -> None:
        self.root = root
        self.sources = sources
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s
        self.fsync = fsync
        self.ledger = Ledger(root)

    def path(self, model: ModelDecl) -> Path:
        """Where the model lives (its name was checked: no '..', nothing absolute)."""
        return self.root / model.folder / model.name

    def partial(self, model: ModelDecl) -> Path:
        """The download's temp file, beside the destination."""
        dest = self.path(model)
        return dest.with_name(f".{dest.name}.part")

    def hold(self, model: ModelDecl) -> Hold:
        """The model's lock file, not yet locked."""
        return self._hold_key(model.key)

    def _hold_key(self, key: str) -> Hold:
        digest = hashlib.sha256(key.encode()).hexdigest()[:32]
        path = self.root / STATE_DIR / "locks" / f"{digest}.lock"
        with disk_errors(path, "create the lock file", ModelStorageError):
            return Hold(path)

    def present(self, model: ModelDecl) -> bool:
        """Whether the file is in place (the ledger learns it was used, if it is ours)."""
        if not self.path(model).is_file():
            return False
        self.ledger.touch(model.key)
        return True

    def download(self, model: ModelDecl, ends: float | None = None) -> Downloaded:
        """Fetch the model into place; the caller holds its lock exclusively.

        ``ends`` (``time.monotonic()``) is the deadline of the whole download, retries
        included (``COMFYUI_MODELS_TIMEOUT_SEC``); by default it starts now.
        """
        began = time.monotonic()
        ends = began + self.timeout_s if ends is None else ends
        dest = self.path(model)
        with disk_errors(dest.parent, "create the folder of", ModelStorageError):
            dest.parent.mkdir(parents=True, exist_ok=True)
        partial = self.partial(model)
        offset = partial.stat().st_size if partial.exists() else 0
        if model.size_bytes is not None and offset > model.size_bytes:
            offset = self._discard(partial)
        try:
            with self.sources.open(model, offset) as body:
                if body.offset != offset:
                    if body.offset != 0:  # resumed elsewhere than asked: start over
                        raise RestartDownload()
                    offset = self._discard(partial)  # the source starts over: so do we
                evicted = self._make_room(model, body, offset)
                size, actual = self._write(model, body, partial, ends)
        except RestartDownload:
            self._discard(partial)
            return self.download(model, ends)
        self._verify(model, partial, size, actual)
        with disk_errors(dest, "store", ModelStorageError):
            os.replace(partial, dest)
            if self.fsync:
                fsync_dir(dest.parent)
        self.ledger.record(model.key, size, model.sha256)
        return Downloaded(size, time.monotonic() - began, offset, evicted)

    # --- steps ----------------------------------------------------------------------

    def _make_room(self, model: ModelDecl, body: Body, offset: int) -> tuple[str, ...]:
        """Evict least recently used downloads over the budget; check the disk's free space."""
        total = body.total_bytes if body.total_bytes is not None else model.size_bytes
        if total is None:
            return ()
        if model.size_bytes is not None and total != model.size_bytes:
            self._discard(self.partial(model))
            raise InvalidWorkflowError(
                f"model '{model.name}': the source has {total} bytes, but size_bytes "
                f"declares {model.size_bytes}",
                model=model.key,
            )
        evicted: list[str] = []
        if self.max_bytes is not None:
            if total > self.max_bytes:
                raise ModelStorageError(
                    f"model '{model.name}' ({total} bytes) is larger than "
                    f"COMFYUI_MODELS_MAX_BYTES ({self.max_bytes})",
                    model=model.key,
                )
            evicted = self._evict_for(model, total)
        need = total - offset + SPARE_BYTES
        with disk_errors(self.root, "check the free space of", ModelStorageError):
            free = shutil.disk_usage(self.path(model).parent).free
        if free < need:
            raise ModelStorageError(
                f"not enough space for model '{model.name}' in {self.path(model).parent}: "
                f"{total - offset} bytes to download, {free} free",
                model=model.key,
                path=str(self.path(model)),
                errno="ENOSPC",
            )
        return tuple(evicted)

    def _evict_for(self, model: ModelDecl, total: int) -> list[str]:
        """Evict least recently used downloads, skipping held ones, until ``total`` fits."""
        assert self.max_bytes is not None
        entries = self.ledger.entries()
        entries.pop(model.key, None)
        evicted: list[str] = []
        while True:
            used = sum(e.size_bytes for e in entries.values())
            if used + total <= self.max_bytes:
                return evicted
            candidates = victims(entries, total, self.max_bytes, keep=model.key)
            removed = next((e for e in candidates if self._evict(e)), None)
            if removed is None:
                raise ModelStorageError(
                    f"model '{model.name}' ({total} bytes) does not fit in "
                    f"COMFYUI_MODELS_MAX_BYTES ({self.max_bytes}): {used} bytes of downloads "
                    "are held by tasks that use them",
                    model=model.key,
                )
            evicted.append(removed.key)
            entries.pop(removed.key)

    def _evict(self, entry: Entry) -> bool:
        """Remove one of our downloads unless a task holds it; whether it was removed."""
        if entry.key.startswith("/") or ".." in entry.key.split("/"):  # a ledger edited by hand
            self.ledger.forget(entry.key)
            return False
        hold = self._hold_key(entry.key)
        try:
            if not hold.try_exclusive():
                return False
            with contextlib.suppress(FileNotFoundError):
                (self.root / entry.key).unlink()
            self.ledger.forget(entry.key)
            log.info("models.evicted", model=entry.key, size_bytes=entry.size_bytes)
            return True
        finally:
            hold.release()

    def _write(self, model: ModelDecl, body: Body, partial: Path, ends: float) -> tuple[int, str]:
        """Append the body to the partial file; its size and the whole file's sha256."""
        digest = hashlib.sha256()
        offset = body.offset
        if offset:
            with disk_errors(partial, "read", ModelStorageError), open(partial, "rb") as existing:
                while block := existing.read(READ_BYTES):
                    digest.update(block)
        with disk_errors(partial, "write", ModelStorageError):
            fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            if not offset:
                os.ftruncate(fd, 0)
            sink = FileSink(
                fd, fsync=self.fsync, expected_bytes=body.total_bytes, resumed=(offset, digest)
            )
            written = offset
            try:
                for chunk in body.chunks:
                    with disk_errors(partial, "write", ModelStorageError):
                        sink.write(chunk)
                    written += len(chunk)
                    if body.total_bytes is not None and written > body.total_bytes:
                        raise ModelSourceError(
                            f"model '{model.name}': the source sent more than {body.total_bytes} "
                            "bytes",
                            model=model.key,
                        )
                    if time.monotonic() > ends:
                        raise ModelSourceError(
                            f"model '{model.name}': the download took longer than "
                            f"{self.timeout_s:g}s (COMFYUI_MODELS_TIMEOUT_SEC)",
                            model=model.key,
                        )
                with disk_errors(partial, "write", ModelStorageError):
                    actual = sink.finish()
            except BaseException:
                sink.abandon()
                raise
        except ModelStorageError:
            self._discard(partial)  # out of space: a partial file only takes more of it
            raise
        finally:
            os.close(fd)
        if body.total_bytes is not None and written < body.total_bytes:
            raise ModelSourceError(
                f"model '{model.name}': the source ended after {written} of "
                f"{body.total_bytes} bytes",
                model=model.key,
            )
        return written, actual

    def _verify(self, model: ModelDecl, partial: Path, size: int, actual: str) -> None:
        if actual == model.sha256 and (model.size_bytes is None or size == model.size_bytes):
            return
        self._discard(partial)
        raise InvalidWorkflowError(
            f"model '{model.name}': the downloaded file's sha256 is {actual}, not the declared "
            f"{model.sha256}; nothing was kept",
            model=model.key,
            sha256=actual,
            expected_sha256=model.sha256,
        )

    def _discard(self, partial: Path) -> int:
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()
        return 0


def shown_size(size_bytes: int) -> str:
    """Bytes as people read them in a trail: ``6.9 GB``, ``512 KB``."""
    value: float = size_bytes
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} TB"
