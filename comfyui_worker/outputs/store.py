"""Where a task's outputs are kept: the interface, the local-directory store, the choice.

A run store holds one task's files under one location (``<root>/<run key>/``). It
writes each file from a stream of chunks while hashing it, so memory stays flat;
nothing half-written is ever presented under its final name; ``manifest.json`` is
written last, so its presence means the set is complete; and an earlier attempt's
files are recognised (same size and sha256) so a retry does not fetch them again.

Every local file-system failure (disk full, read-only, name too long, a symlink
where the run directory should be) becomes one ``OutputStorageError`` naming the path.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit

from comfyui_worker.errors import ConfigError, OutputStorageError, TechnicalError
from comfyui_worker.outputs.collect import JOURNAL, MANIFEST, Stored
from comfyui_worker.outputs.filesink import FileSink
from comfyui_worker.outputs.objstore import REFUSED_SCHEMES, ObjectStore, is_object_url, refusal
from comfyui_worker.settings import ComfySettings

CHUNK_BYTES = 1024 * 1024
PART_SUFFIX = ".part"


class RunStore(Protocol):
    """One task's output location."""

    @property
    def location(self) -> str:
        """The run's directory or URL prefix, as the result shows it."""
        ...

    def prepare(self) -> None:
        """Make the location usable and remove what an interrupted attempt left half-done."""
        ...

    def reusable(self, key: str) -> Stored | None:
        """The file an earlier attempt stored under ``key``, if it is still whole."""
        ...

    def write(
        self, key: str, chunks: Iterable[bytes], *, media_type: str, size_hint: int | None
    ) -> Stored:
        """Store a stream under ``key`` atomically; return its size and sha256."""
        ...

    def write_manifest(self, manifest: dict[str, object]) -> str:
        """Write ``manifest.json`` last; return its location."""
        ...

    def delete(self, key: str) -> None:
        """Remove a file saved early that turned out not to be an output."""
        ...


class OutputStore(Protocol):
    """Where every task's outputs go (a local directory, an object store)."""

    def run(self, run_key: str) -> RunStore:
        """The store for one task's files."""
        ...

    def check_writable(self) -> str:
        """Prove a file can be written; return a description of the location."""
        ...

    def missing(self) -> str | None:
        """What of the location does not exist yet (a bucket, a directory), else None."""
        ...

    def check_before_task(self) -> None:
        """A cheap check run before each task's GPU work (readiness probes the rest)."""
        ...


@contextlib.contextmanager
def disk_errors(
    path: Path, action: str, error: type[TechnicalError] = OutputStorageError
) -> Iterator[None]:
    """Turn an OSError into ``error`` (outputs': ``OutputStorageError``) naming path and errno."""
    try:
        yield
    except OSError as exc:
        code = errno.errorcode.get(exc.errno or 0, "unknown")
        raise error(
            f"cannot {action} {path}: {exc.strerror or exc} ({code})",
            path=str(path),
            errno=code,
        ) from exc


class LocalStore:
    """Outputs under a local (or mounted) directory: ``<output_dir>/<run key>/``."""

    def __init__(self, root: Path, *, fsync: bool) -> None:
        self.root = root
        self.fsync = fsync

    def run(self, run_key: str) -> LocalRunStore:
        """The store for one task's files."""
        return LocalRunStore(self.root, run_key, fsync=self.fsync)

    def check_writable(self) -> str:
        """Create the output dir if needed and prove a file can be written there."""
        with disk_errors(self.root, "write to the output directory"):
            self.root.mkdir(parents=True, exist_ok=True)
            fd, probe = tempfile.mkstemp(dir=self.root, prefix=".write-check-")
            os.close(fd)
            os.unlink(probe)
        return str(self.root.resolve())

    def missing(self) -> str | None:
        """Nothing: the worker creates its output directory itself, as documented."""
        return None

    def check_before_task(self) -> None:
        """Local disks fill up and get remounted: prove it is writable right now (~100 µs)."""
        self.check_writable()


class LocalRunStore:
    """One task's directory: files renamed into place, a journal, the manifest last."""

    def __init__(self, root: Path, run_key: str, *, fsync: bool) -> None:
        self.root = root
        self.run_dir = root / run_key
        self.fsync = fsync
        self._journal: dict[str, Stored] = {}

    @property
    def location(self) -> str:
        """The run directory."""
        return str(self.run_dir)

    def prepare(self) -> None:
        """Create the run dir (refusing symlinks below the root) and sweep stale temp files."""
        self._make_dirs(self.run_dir)
        with disk_errors(self.run_dir, "clean up stale temporary files in"):
            for stale in self.run_dir.rglob(f"*{PART_SUFFIX}"):
                if stale.is_file() and not stale.is_symlink():
                    stale.unlink()
        self._journal = _read_journal(self.run_dir / JOURNAL)

    def reusable(self, key: str) -> Stored | None:
        """A file an earlier attempt saved, still there and matching its size and sha256."""
        known = self._journal.get(key)
        target = self.run_dir / key
        if known is None or target.is_symlink() or not target.is_file():
            return None
        with disk_errors(target, "read"):
            if target.stat().st_size != known.size_bytes or sha256_file(target) != known.sha256:
                return None
        return known

    def write(
        self, key: str, chunks: Iterable[bytes], *, media_type: str, size_hint: int | None
    ) -> Stored:
        """Stream into a temp file beside the target, hashing; rename when whole."""
        target = self.run_dir / key
        self._make_dirs(target.parent)
        with disk_errors(target, "write"):
            size, digest = stream_to_file(target, chunks, fsync=self.fsync, size_hint=size_hint)
            stored = Stored(key, str(target), size, digest, media_type)
            self._remember(stored)
        return stored

    def write_manifest(self, manifest: dict[str, object]) -> str:
        """Write ``manifest.json`` atomically, last: its presence means the set is complete."""
        target = self.run_dir / MANIFEST
        data = json.dumps(manifest, indent=2, sort_keys=True).encode("utf-8")
        with disk_errors(target, "write"), _temp_beside(target) as (fd, tmp_path):
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            if self.fsync:
                os.fsync(fd)
            os.fchmod(fd, 0o644)
            os.replace(tmp_path, target)
        if self.fsync:
            with disk_errors(self.run_dir, "sync"):
                fsync_dir(self.run_dir)
        return str(target)

    def delete(self, key: str) -> None:
        """Remove a file (and forget it), e.g. one saved early that is not an output."""
        target = self.run_dir / key
        with disk_errors(target, "delete"), contextlib.suppress(FileNotFoundError):
            target.unlink()
        self._journal.pop(key, None)

    def _make_dirs(self, directory: Path) -> None:
        """Mkdir -p below the root, refusing any component that is a symlink."""
        with disk_errors(directory, "create"):
            self.root.mkdir(parents=True, exist_ok=True)
            current = self.root
            for part in directory.relative_to(self.root).parts:
                current = current / part
                if current.is_symlink():
                    raise OutputStorageError(
                        f"{current} is a symlink; refusing to follow it out of the output "
                        "directory (COMFYUI_OUTPUT_DIR)",
                        path=str(current),
                    )
                current.mkdir(exist_ok=True)

    def _remember(self, stored: Stored) -> None:
        self._journal[stored.key] = stored
        with (self.run_dir / JOURNAL).open("a", encoding="utf-8") as journal:
            journal.write(json.dumps(asdict(stored)) + "\n")


def stream_to_file(
    target: Path,
    chunks: Iterable[bytes],
    *,
    fsync: bool,
    size_hint: int | None,
    accept: Callable[[str], None] = lambda sha256: None,
) -> tuple[int, str]:
    """Stream into a temp file beside ``target``, hashing; rename when whole: (size, sha256).

    ``accept`` sees the sha256 before the rename and may refuse it by raising; a refused
    or failed file never appears at ``target``. OSErrors are the caller's to translate.
    """
    with _temp_beside(target) as (fd, tmp_path):
        sink = FileSink(fd, fsync=fsync, expected_bytes=size_hint)
        try:
            size = 0
            for chunk in chunks:
                size += len(chunk)
                sink.write(chunk)
            digest = sink.finish()
        finally:
            sink.abandon()
        accept(digest)
        os.fchmod(fd, 0o644)  # mkstemp's 0600 would hide it from readers
        os.replace(tmp_path, target)
    return size, digest


@contextlib.contextmanager
def _temp_beside(target: Path) -> Iterator[tuple[int, str]]:
    """A temp file next to ``target``, always closed, and removed unless renamed into place."""
    fd, tmp_path = tempfile.mkstemp(
        dir=target.parent, prefix=f".{target.name}.", suffix=PART_SUFFIX
    )
    try:
        yield fd, tmp_path
    finally:
        os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_path)


def fsync_dir(directory: Path) -> None:
    """Make a rename in ``directory`` durable (its entry, not only the file's bytes)."""
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _read_journal(path: Path) -> dict[str, Stored]:
    """Finished files from earlier attempts; a torn or foreign line is ignored."""
    records: dict[str, Stored] = {}
    if not path.is_file():
        return records
    with disk_errors(path, "read"):
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    for line in lines:
        with contextlib.suppress(ValueError, TypeError):
            record = Stored(**json.loads(line))
            records[record.key] = record
    return records


def sha256_file(path: Path) -> str:
    """Hash a file in chunks (flat memory)."""
    digest = hashlib.sha256()
    with path.open("rb") as source:
        while chunk := source.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def open_store(settings: ComfySettings) -> OutputStore:
    """The store ``WORKER_OUTPUT_URL`` names: a local directory, or an object store.

    Object stores use obstore (Python bindings to Rust's ``object_store``): it streams
    multipart uploads with concurrent parts outside the GIL, and an upload that fails is
    aborted, so nothing half-written ever appears under a key. Validated here, at start.
    """
    location = settings.output_location
    scheme = urlsplit(location).scheme
    if scheme in REFUSED_SCHEMES:
        raise ConfigError(f"WORKER_OUTPUT_URL: {refusal(scheme)}")
    if is_object_url(location):
        return ObjectStore(location, settings.store_config(), presign_ttl_s=settings.presign_ttl_s)
    if scheme not in ("", "file"):
        raise ConfigError(
            f"WORKER_OUTPUT_URL: unknown scheme {scheme}://; use a directory or s3://"
        )
    directory = Path(location.removeprefix("file://"))
    return LocalStore(directory, fsync=settings.fsync)
