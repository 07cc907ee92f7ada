"""Read a job's output files back: only files its result lists, only from the output location.

``submit --download`` and the jobs page both come here. A file is found by what means
the same on every machine: this machine's output location (``COMFYUI_OUTPUT_DIR`` /
``WORKER_OUTPUT_URL``), then the job's run key, then the file's relative path; so a
worker that wrote ``./output`` and a page started elsewhere with the same directory
agree. A result is data from LittleHorse, so it is not trusted: a path that would leave
the location (``..``, an absolute path, another bucket) is ``output-not-readable``.
Objects are read with this machine's own ``AWS_*`` settings.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import obstore
from pydantic import ValidationError

from comfyui_worker.errors import (
    ConfigError,
    OutputNotReadableError,
    OutputRejectedError,
    OutputStorageError,
)
from comfyui_worker.jobs.model import Job
from comfyui_worker.jobs.settings import JobsSettings
from comfyui_worker.outputs.collect import MANIFEST
from comfyui_worker.outputs.objstore import ObjectStore, is_object_url
from comfyui_worker.outputs.store import disk_errors, stream_to_file
from comfyui_worker.result import SavedOutput

CHUNK_BYTES = 1024 * 1024
MAX_MANIFEST_BYTES = 64 * 1024 * 1024


class OutputReader:
    """Opens output files where the worker saved them, refusing anything elsewhere."""

    def __init__(self, settings: JobsSettings) -> None:
        self.settings = settings
        self._store: ObjectStore | None = None

    def locate(self, job: Job, relative: str, recorded: str) -> str:
        """Where a job's file is here: ``<location>/<run key>/<relative>``.

        ``recorded`` (the path the worker wrote down) is used only for a result that
        names no run key (written by an older worker).
        """
        run_key = job.result.run_key if job.result is not None else None
        location = self.settings.output_location
        if run_key is None or location is None:
            return recorded
        parts = [*_plain_parts(run_key), *_plain_parts(relative)]
        if is_object_url(location):
            return "/".join([location.rstrip("/"), *parts])
        return str(Path(location.removeprefix("file://")).joinpath(*parts))

    def open_output(
        self, job: Job, output: SavedOutput
    ) -> contextlib.AbstractContextManager[Iterator[bytes]]:
        """One of the job's outputs, found under this machine's location."""
        return self.open(self.locate(job, output.relative_path, output.path))

    @contextlib.contextmanager
    def open(self, path: str) -> Iterator[Iterator[bytes]]:
        """The file's bytes in chunks; any refusal or missing file raises before the first."""
        if is_object_url(path):
            with self._open_object(path) as chunks:
                yield chunks
            return
        local = self._inside_output_dir(Path(path))
        with disk_errors(local, "read"), local.open("rb") as handle:
            yield iter(lambda: handle.read(CHUNK_BYTES), b"")

    def outputs(self, job: Job) -> list[SavedOutput]:
        """Every output, from ``manifest.json`` when the result kept only a prefix."""
        result = job.result
        if result is None or not result.outputs_truncated or result.manifest is None:
            return list(job.outputs)
        manifest = self.locate(job, MANIFEST, result.manifest)
        with self.open(manifest) as chunks:
            data = _read_capped(chunks, MAX_MANIFEST_BYTES, manifest)
        listed: Any = json.loads(data).get("outputs", [])
        try:
            return [SavedOutput.model_validate(item) for item in listed]
        except ValidationError:
            return list(job.outputs)

    def download(self, job: Job, destination: Path) -> list[Path]:
        """Copy every output under ``destination``/<relative path>, checking each sha256."""
        written = []
        for output in self.outputs(job):
            target = _target(destination, output.relative_path)
            with self.open_output(job, output) as chunks:
                _save(chunks, target, output)
            written.append(target)
        return written

    def _inside_output_dir(self, path: Path) -> Path:
        location = self.settings.output_location
        if location is None or is_object_url(location):
            raise ConfigError(
                f"{path} is a local output: set COMFYUI_OUTPUT_DIR (or WORKER_OUTPUT_URL) to "
                "the worker's output directory to read it"
            )
        root = Path(location.removeprefix("file://")).resolve()
        resolved = path.resolve()
        if not resolved.is_relative_to(root):
            raise OutputNotReadableError(
                f"{path} is outside the output directory {root}; only files there are read",
                path=str(path),
            )
        return resolved

    @contextlib.contextmanager
    def _open_object(self, url: str) -> Iterator[Iterator[bytes]]:
        store = self._object_store(url)
        key = store.key_in(url)
        if key is None:
            raise OutputNotReadableError(
                f"{url} is outside {store.location}; only objects there are read", path=url
            )
        with store.errors("read", key):
            result = obstore.get(store.client, key)
        yield _object_chunks(store, key, result.stream(min_chunk_size=CHUNK_BYTES))

    def _object_store(self, url: str) -> ObjectStore:
        location = self.settings.output_location
        if location is None or not is_object_url(location):
            raise ConfigError(
                f"{url} is in an object store: set WORKER_OUTPUT_URL (and AWS_*) as the "
                "worker has them to read it"
            )
        if self._store is None:
            self._store = ObjectStore(location, self.settings.store_config())
        return self._store


def _object_chunks(store: ObjectStore, key: str, stream: Any) -> Iterator[bytes]:
    with store.errors("read", key):
        for chunk in stream:
            yield bytes(chunk)


def _read_capped(chunks: Iterator[bytes], limit: int, what: str) -> bytes:
    data = bytearray()
    for chunk in chunks:
        data += chunk
        if len(data) > limit:
            raise OutputRejectedError(f"{what} is larger than {limit} bytes", path=what)
    return bytes(data)


def _segments(relative: str) -> list[str] | None:
    """A relative path's segments, or None when it is empty, absolute or climbs (``..``)."""
    path = PurePosixPath(relative)
    if not path.parts or path.is_absolute() or ".." in path.parts:
        return None
    return list(path.parts)


def _plain_parts(relative: str) -> list[str]:
    """A result's relative path as segments; anything that could leave the location refused."""
    parts = _segments(relative)
    if parts is None or "\\" in relative:
        raise OutputNotReadableError(
            f"{relative!r} is not a plain relative path; it is not read", path=relative
        )
    return parts


def _target(destination: Path, relative_path: str) -> Path:
    """Where an output goes under ``destination``: plain relative segments only."""
    parts = _segments(relative_path)
    if parts is None:
        raise OutputRejectedError(
            f"output path {relative_path!r} is not a plain relative path", path=relative_path
        )
    return destination.joinpath(*parts)


def _save(chunks: Iterator[bytes], target: Path, output: SavedOutput) -> None:
    """Stream to a temp file beside the target, check the sha256, then rename into place."""

    def recorded(sha256: str) -> None:
        if sha256 != output.sha256:
            raise OutputStorageError(
                f"{output.path}: its sha256 is not the one the job recorded; the file changed "
                "after the job saved it",
                path=output.path,
            )

    with disk_errors(target, "write"):
        target.parent.mkdir(parents=True, exist_ok=True)
        stream_to_file(target, chunks, fsync=False, size_hint=output.size_bytes, accept=recorded)
