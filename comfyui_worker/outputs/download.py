"""Save a finished prompt's files: stream each from ComfyUI's /view into the run store.

Each file is fetched once per task (an earlier attempt's copy is reused when whole),
checked against ``COMFYUI_MAX_OUTPUT_BYTES`` while it streams, and retried whole on
a transient failure. ComfyUI's own files are never touched (a cached re-run points
at the same names).
"""

from __future__ import annotations

import mimetypes
import threading
from collections.abc import Iterator

import structlog

from comfyui_worker.comfy.client import ComfyClient
from comfyui_worker.errors import WorkerShuttingDownError
from comfyui_worker.outputs.collect import FileId, OutputRef, Stored, plan, rejected
from comfyui_worker.outputs.store import RunStore
from comfyui_worker.result import SavedOutput

log = structlog.get_logger("comfyui_worker.outputs.download")


class Downloader:
    """Saves refs into one run store."""

    def __init__(
        self,
        client: ComfyClient,
        store: RunStore,
        *,
        max_bytes: int,
        abort: threading.Event | None = None,
        may_reuse: bool = True,
    ) -> None:
        self.client = client
        self.store = store
        self.max_bytes = max_bytes
        self.abort = abort or threading.Event()
        self.may_reuse = may_reuse  # False: no earlier attempt, so no copy to look for
        self._prepared = False
        self._lock = threading.Lock()

    def prepare(self) -> None:
        """Make the run location usable, once (early saves and the final pass share it)."""
        with self._lock:
            if not self._prepared:
                self.store.prepare()
                self._prepared = True

    def save_all(
        self, refs: list[OutputRef], early: dict[FileId, tuple[str, Stored]] | None = None
    ) -> list[SavedOutput]:
        """Plan every destination first (so a bad name fails before any byte), then save.

        ``early`` holds files saved while the prompt still ran; each is used when the
        final plan gives its file the same key.
        """
        planned = plan(refs)
        self.prepare()
        ready = {key: stored for key, stored in (early or {}).values()}
        done: dict[str, tuple[Stored, bool]] = {}
        saved = []
        for ref, key in planned:
            if self.abort.is_set():
                raise WorkerShuttingDownError(
                    f"worker shut down after saving {len(done)} of {len(planned)} files"
                )
            if key not in done:
                early_copy = (early or {}).get(ref.file_id)
                if early_copy is not None and early_copy[0] == key:
                    done[key] = (early_copy[1], False)
                else:
                    done[key] = self.save(ref, key)
            stored, reused = done[key]
            saved.append(_saved(ref, stored, reused))
        self._discard(ready, {key for _, key in planned})
        return saved

    def _discard(self, early: dict[str, Stored], kept: set[str]) -> None:
        """Delete what was saved early but is not in /history's list: it is not an output."""
        for key in sorted(set(early) - kept):
            log.info("comfy.early_output_discarded", key=key)
            self.store.delete(key)

    def save(self, ref: OutputRef, key: str) -> tuple[Stored, bool]:
        """Reuse an earlier attempt's whole copy, or fetch and store the file."""
        reused = self.store.reusable(key) if self.may_reuse else None
        if reused is not None:
            log.info("comfy.output_reused", filename=ref.filename, key=key)
            return reused, True
        for attempt in self.client.retrying():
            with attempt:
                return self._fetch(ref, key), False
        raise AssertionError("unreachable: stamina re-raises the last error")

    def _fetch(self, ref: OutputRef, key: str) -> Stored:
        with self.client.view(ref.filename, ref.subfolder, ref.comfy_type) as stream:
            self._check_size(ref, stream.content_length or 0)
            return self.store.write(
                key,
                self._counted(ref, stream.chunks),
                media_type=media_type(stream.content_type, ref.filename),
                size_hint=stream.content_length,
            )

    def _counted(self, ref: OutputRef, chunks: Iterator[bytes]) -> Iterator[bytes]:
        size = 0
        for chunk in chunks:
            size += len(chunk)
            self._check_size(ref, size)
            yield chunk

    def _check_size(self, ref: OutputRef, size: int) -> None:
        if size > self.max_bytes:
            raise rejected(
                ref,
                f"{size} bytes is over the limit of {self.max_bytes} (COMFYUI_MAX_OUTPUT_BYTES)",
                size_bytes=size,
            )


def _saved(ref: OutputRef, stored: Stored, reused: bool) -> SavedOutput:
    return SavedOutput(
        node_id=ref.node_id,
        key=ref.key,
        filename=ref.filename,
        subfolder=ref.subfolder,
        comfy_type=ref.comfy_type,
        path=stored.location,
        relative_path=stored.key,
        size_bytes=stored.size_bytes,
        sha256=stored.sha256,
        media_type=stored.media_type,
        reused=reused,
        url=stored.url,
    )


def media_type(header: str | None, filename: str) -> str:
    """The response's content type, or a guess from the name when it says nothing useful."""
    declared = (header or "").split(";")[0].strip()
    if declared not in ("", "application/octet-stream"):
        return declared
    return mimetypes.guess_type(filename)[0] or "application/octet-stream"
