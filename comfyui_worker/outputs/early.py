"""Save outputs while the prompt still runs: from ComfyUI's ``executed`` events.

ComfyUI announces each output node's files in its ``executed`` WebSocket event, before
the prompt finishes. Saving them then means a multi-output workflow is saved soon after
its last node, not after all of them. ``/history`` stays the truth: the final pass
uses an early copy only where the final plan gives that file the same key, and
deletes early copies /history does not list. Any failure here is left to that pass.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

import structlog

from comfyui_worker.errors import ComfyWorkerError
from comfyui_worker.outputs.collect import (
    RESERVED,
    FileId,
    OutputRef,
    Stored,
    collect,
    relative_key,
)
from comfyui_worker.outputs.download import Downloader

log = structlog.get_logger("comfyui_worker.outputs.early")
T = TypeVar("T")


class EarlySaver:
    """One run's early saves, one file at a time on a thread of its own."""

    def __init__(self, downloader: Downloader, *, include_temp: bool) -> None:
        self.downloader = downloader
        self.include_temp = include_temp
        self._futures: dict[FileId, Future[tuple[str, Stored] | None]] = {}
        self._keys: set[str] = set()
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None

    def offer(self, kind: str, data: dict[str, Any]) -> None:
        """A WebSocket event for the prompt: start saving an ``executed`` node's files.

        ``execution_start`` readies the run location meanwhile, so neither the first
        early save nor the final pass waits for it.
        """
        if kind == "execution_start":
            with self._lock:
                self._on_pool(self._prepare)
            return
        if kind != "executed" or not isinstance(data.get("output"), dict):
            return
        node = str(data.get("node") or data.get("display_node") or "?")
        refs = collect({node: data["output"]}, include_temp=self.include_temp).files
        for ref in refs:
            self._start(ref)

    def _start(self, ref: OutputRef) -> None:
        try:
            key = relative_key(ref)
        except ComfyWorkerError:
            return  # an unsafe name: the final pass rejects it with the whole story
        with self._lock:
            identity = ref.file_id
            if identity in self._futures or key in self._keys or key in RESERVED:
                return
            self._keys.add(key)
            self._futures[identity] = self._on_pool(self._save, ref, key)

    def _on_pool(self, call: Callable[..., T], *args: Any) -> Future[T]:
        """Run ``call`` on the run's one early-save thread (the caller holds the lock)."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="early-save")
        return self._pool.submit(call, *args)

    def _prepare(self) -> None:
        try:
            self.downloader.prepare()
        except ComfyWorkerError as exc:  # the final pass meets it again and fails the run
            log.info("comfy.early_prepare_failed", error=exc.name, message=exc.message)

    def _save(self, ref: OutputRef, key: str) -> tuple[str, Stored] | None:
        try:
            self.downloader.prepare()
            stored, _reused = self.downloader.save(ref, key)
        except ComfyWorkerError as exc:
            log.info("comfy.early_save_failed", key=key, error=exc.name, message=exc.message)
            return None
        log.debug("comfy.output_saved_early", key=key)
        return key, stored

    def finish(self) -> dict[FileId, tuple[str, Stored]]:
        """Wait for the saves in flight; return those that succeeded."""
        with self._lock:
            futures = dict(self._futures)
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)
        return {
            identity: saved
            for identity, future in futures.items()
            if (saved := future.result()) is not None
        }
