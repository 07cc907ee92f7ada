"""Make sure ComfyUI has a request's declared models before it is submitted.

For each model: ComfyUI is asked (``GET /models/{folder}``); a file it lists, or one
already in ``COMFYUI_MODELS_DIR``, is ``present``; otherwise it is downloaded there
(``models/files``), once however many tasks need it, retried with resume on a cut.
Each model stays held (shared lock) until the run ends, so no eviction removes it
under a queued prompt. After a download ``on_downloaded`` runs (the runner refreshes
its ``/object_info``, so preflight sees the new file). It runs in the task's own
preparation, before its submission: with ``WORKER_PREFETCH`` a queued task fetches its
models while the current one executes.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import structlog

from comfyui_worker.comfy.client import ComfyClient
from comfyui_worker.errors import ModelSourceError, ModelStorageError, WorkerShuttingDownError
from comfyui_worker.models.files import Downloaded, Hold, ModelFiles, shown_size
from comfyui_worker.models.sources import Sources
from comfyui_worker.settings import ComfySettings
from comfyui_worker.transport import Deadline
from comfyui_worker.workflow.modeldecl import ModelDecl

log = structlog.get_logger("comfyui_worker.models.ensure")

Say = Callable[[str], None]
PRESENT = "present"


@dataclass(frozen=True)
class Outcome:
    """One model's fate in one task: present, or downloaded (bytes, seconds)."""

    key: str
    downloaded: Downloaded | None = None


Observer = Callable[[Outcome], None]


class ModelEnsurer:
    """Declared models for one ComfyUI: present, or fetched into its models directory."""

    def __init__(
        self,
        settings: ComfySettings,
        client: ComfyClient,
        *,
        on_downloaded: Callable[[], None] | None = None,
        sources: Sources | None = None,
    ) -> None:
        self.settings = settings
        self.client = client
        self.sources = sources or Sources(settings)
        self.files = (
            ModelFiles(
                settings.models_dir,
                self.sources,
                max_bytes=settings.models_max_bytes,
                timeout_s=settings.models_timeout_s,
                fsync=settings.fsync,
            )
            if settings.models_dir is not None
            else None
        )
        self.on_downloaded = on_downloaded
        self.observers: list[Observer] = []

    def interrupt(self) -> None:
        """The worker is draining: cut downloads in flight (they resume elsewhere)."""
        self.sources.interrupt()

    @contextlib.contextmanager
    def ensured(self, models: Sequence[ModelDecl], say: Say) -> Iterator[list[Outcome]]:
        """Every model present for the duration of the block (held against eviction)."""
        holds: list[Hold] = []
        outcomes: list[Outcome] = []
        try:
            listings: dict[str, list[str] | None] = {}
            for model in models:
                outcome, hold = self._ensure_one(model, listings)
                if hold is not None:
                    holds.append(hold)
                outcomes.append(outcome)
                self._report(model, outcome, say)
            if any(o.downloaded for o in outcomes) and self.on_downloaded is not None:
                self.on_downloaded()
            yield outcomes
        finally:
            for hold in holds:
                hold.release()

    def status(self, model: ModelDecl) -> str:
        """``present``, or ``missing`` and whether this worker would fetch it: for ``check``."""
        listed = self.client.models(model.folder)
        if (listed is not None and model.name in listed) or (
            self.files is not None and self.files.path(model).is_file()
        ):
            return PRESENT
        if self.files is not None:
            return "missing (downloaded on first use)"
        return "missing (set COMFYUI_MODELS_DIR to fetch it)"

    def _ensure_one(
        self, model: ModelDecl, listings: dict[str, list[str] | None]
    ) -> tuple[Outcome, Hold | None]:
        if model.folder not in listings:
            listings[model.folder] = self.client.models(model.folder)
        listed = listings[model.folder]
        in_comfy = listed is not None and model.name in listed
        if self.files is None:
            if in_comfy:
                return Outcome(model.key), None
            raise ModelStorageError(
                f"model '{model.name}' is not in ComfyUI's models/{model.folder}, and "
                "COMFYUI_MODELS_DIR is not set, so this worker cannot fetch it",
                model=model.key,
            )
        if not self.files.root.is_dir():
            raise ModelStorageError(
                f"COMFYUI_MODELS_DIR {self.files.root} does not exist (it must be the models "
                "directory ComfyUI reads, as the worker sees it)",
                path=str(self.files.root),
            )
        hold = self.files.hold(model).shared()  # waits while another task downloads it
        try:
            if self.files.present(model) or in_comfy:  # present() marks it used
                outcome = Outcome(model.key)
            else:
                hold.exclusive()
                downloaded = None
                if not self.files.present(model):  # else another task fetched it meanwhile
                    downloaded = self._download(model)
                hold.shared()
                outcome = Outcome(model.key, downloaded)
            if listed is not None and not in_comfy:
                self._check_listed(model)
            return outcome, hold
        except BaseException:
            hold.release()
            raise

    def _check_listed(self, model: ModelDecl) -> None:
        """The file is in COMFYUI_MODELS_DIR: ComfyUI must now list it, else the dirs differ."""
        listed = self.client.models(model.folder)
        if listed is None or model.name in listed:
            return
        assert self.files is not None
        raise ModelStorageError(
            f"model '{model.name}' is in {self.files.path(model)}, but ComfyUI does not list "
            f"it in models/{model.folder}: COMFYUI_MODELS_DIR must be the models directory "
            "ComfyUI reads, as the worker sees it",
            model=model.key,
            path=str(self.files.path(model)),
        )

    def _download(self, model: ModelDecl) -> Downloaded:
        """Download with resume: a cut or a 5xx is retried from where it stopped."""
        assert self.files is not None
        log.info("models.downloading", model=model.key, url=model.url.split("?")[0][:200])
        deadline = Deadline(self.settings.models_timeout_s)
        ends = time.monotonic() + self.settings.models_timeout_s  # one budget for every try
        try:
            for attempt in deadline.retrying((ModelSourceError,), self.settings.http_retries + 1):
                with attempt:
                    if self.sources.interrupted.is_set():
                        break
                    return self.files.download(model, ends)
        except ModelSourceError:
            if not self.sources.interrupted.is_set():
                raise
        raise WorkerShuttingDownError(
            f"model '{model.name}': the download was interrupted by the worker's shutdown; "
            "the partial file stays for the next attempt",
            model=model.key,
        )

    def _report(self, model: ModelDecl, outcome: Outcome, say: Say) -> None:
        done = outcome.downloaded
        if done is None:
            say(f"model {model.name}: present")
            log.info("models.present", model=model.key)
        else:
            resumed = f", resumed at {shown_size(done.resumed_from)}" if done.resumed_from else ""
            say(
                f"model {model.name}: downloaded {shown_size(done.size_bytes)} in "
                f"{done.seconds:.0f} s{resumed}"
            )
            log.info(
                "models.downloaded",
                model=model.key,
                size_bytes=done.size_bytes,
                took_ms=round(done.seconds * 1000),
                resumed_from=done.resumed_from,
                evicted=list(done.evicted),
            )
        for observe in self.observers:
            observe(outcome)
