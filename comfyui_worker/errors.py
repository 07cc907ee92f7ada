"""One exception hierarchy; every failure carries its own classification.

Each class knows its stable kebab-case ``name`` (the LittleHorse exception name and
the metrics label), whether it is ``business`` (the input is at fault: reported as
an ``LHTaskException`` and never retried) or technical (the environment failed:
TASK_FAILED, retried by the WfSpec), the CLI's ``exit_code`` and the jobs page's
``http_status``. Boundaries read these attributes; none of them re-decides. HTTP and
gRPC errors become these in exactly one place each: HTTP in ``transport.py``
(transport) and ``comfy/client.py`` (statuses), gRPC in ``lh/rpc.py``.

    ComfyWorkerError
    ├── ConfigError                  configuration-error        exit 3
    ├── BusinessError                (never retried)
    │   ├── InvalidWorkflowError     invalid-workflow           exit 4
    │   ├── OutputRejectedError      output-rejected            exit 4
    │   ├── ExecutionFailedError     execution-failed           exit 5
    │   └── ExecutionInterruptedError execution-interrupted     exit 5
    └── TechnicalError               (retried by the WfSpec)    exit 6
        ├── UnreachableError         (a transport failure; ``maybe_delivered``)
        │   ├── ComfyUnavailableError comfyui-unavailable
        │   └── ModelSourceError     model-source-failed
        ├── ComfyServerError         comfyui-server-error
        ├── ComfyRequestError        comfyui-request-failed
        ├── PromptVanishedError      prompt-vanished
        ├── ExecutionTimeoutError    execution-timeout
        ├── ComfyOutOfMemoryError    comfyui-out-of-memory
        ├── WorkerShuttingDownError  worker-shutting-down
        ├── WorkerNotReadyError      worker-not-ready
        ├── AttemptFencedError       attempt-fenced
        ├── OutputStorageError       output-storage-failed      exit 7
        ├── ModelStorageError        model-storage-failed       exit 7
        ├── LittleHorseError         littlehorse-refused        exit 8
        │   ├── LittleHorseUnavailableError littlehorse-unavailable exit 8
        │   └── NotFoundError        not-found                  exit 9
        └── InternalError            internal-error             exit 1

Messages and contents are bounded (``bounds.py``) at construction, so no input can
make a report too large for LittleHorse.
"""

from __future__ import annotations

import traceback
from enum import IntEnum
from typing import Any, ClassVar

from comfyui_worker.bounds import bound_json, bound_text, dumps

MAX_MESSAGE_CHARS = 4_000
MAX_DETAILS_BYTES = 16_000


class ExitCode(IntEnum):
    """``main.py`` exit codes, one per kind of failure so scripts can react."""

    OK = 0
    INTERNAL = 1
    USAGE = 2
    CONFIG = 3
    WORKFLOW = 4
    EXECUTION = 5
    TECHNICAL = 6
    STORAGE = 7
    LITTLEHORSE = 8
    NOT_FOUND = 9
    INTERRUPTED = 130


class ComfyWorkerError(Exception):
    """Base class: a failure with a stable name, a classification and bounded details."""

    name: ClassVar[str] = "comfyui-worker-error"
    business: ClassVar[bool] = False
    exit_code: ClassVar[ExitCode] = ExitCode.INTERNAL
    http_status: ClassVar[int] = 500  # the jobs page's answer to a call that failed so

    def __init__(self, message: str, **details: Any) -> None:
        self.message = bound_text(message, MAX_MESSAGE_CHARS)
        self.details: dict[str, Any] = bound_json(details, MAX_DETAILS_BYTES)
        super().__init__(self.message)

    def content(self) -> dict[str, Any]:
        """A JSON-able, bounded description for task outputs, logs and the CLI."""
        return {"error": self.name, "message": self.message, **self.details}

    def describe(self) -> str:
        """One bounded line with the name, the message and every detail (status, URL, node)."""
        extra = f" {dumps(self.details)}" if self.details else ""
        return bound_text(f"{self.name}: {self.message}{extra}", MAX_MESSAGE_CHARS)

    def __str__(self) -> str:
        return self.describe()


class ConfigError(ComfyWorkerError):
    """Invalid configuration: one line per bad variable, naming it."""

    name = "configuration-error"
    exit_code = ExitCode.CONFIG


# --- business: the request itself is wrong; retrying the same input cannot help ------


class BusinessError(ComfyWorkerError):
    """The task's input is at fault; reported as a named LittleHorse exception."""

    business = True
    exit_code = ExitCode.WORKFLOW
    http_status = 400


class InvalidWorkflowError(BusinessError):
    """Bad graph shape, UI format, unknown node, missing model, bad parameter, or a 400."""

    name = "invalid-workflow"


class OutputRejectedError(BusinessError):
    """An output is unsafe to save (path escapes the output dir) or over the size cap."""

    name = "output-rejected"
    http_status = 403


class ExecutionFailedError(BusinessError):
    """A node raised inside ComfyUI (not out-of-memory): the graph or its inputs are at fault."""

    name = "execution-failed"
    exit_code = ExitCode.EXECUTION


class ExecutionInterruptedError(BusinessError):
    """Someone interrupted the prompt (in ComfyUI, or by cancelling the job)."""

    name = "execution-interrupted"
    exit_code = ExitCode.EXECUTION


# --- technical: the environment failed; the same input may well succeed on a retry ---


class TechnicalError(ComfyWorkerError):
    """A technical failure; LittleHorse retries it per the WfSpec's retry policy."""

    name = "technical-failure"
    exit_code = ExitCode.TECHNICAL
    maybe_delivered = False  # whether the peer may have acted on the failed request


class UnreachableError(TechnicalError):
    """A request failed in transport; ``maybe_delivered`` says the peer may have acted on it.

    A refused connection never delivered anything; a read timeout or a connection cut
    after the request was written may hide a request the peer did act on.
    """

    name = "unreachable"

    def __init__(self, message: str, *, maybe_delivered: bool, **details: Any) -> None:
        super().__init__(message, maybe_delivered=maybe_delivered, **details)
        self.maybe_delivered = maybe_delivered


class ComfyUnavailableError(UnreachableError):
    """ComfyUI could not be reached (connection refused, timeout) after all retries."""

    name = "comfyui-unavailable"


class ComfyServerError(TechnicalError):
    """ComfyUI answered 5xx (after retries) or something that is not its API.

    ``maybe_delivered``: a proxy's gateway timeout (504) may hide a request ComfyUI is
    still processing; ComfyUI's own 500 acted on nothing.
    """

    name = "comfyui-server-error"

    def __init__(self, message: str, *, maybe_delivered: bool = False, **details: Any) -> None:
        super().__init__(message, **details)
        self.maybe_delivered = maybe_delivered


class ComfyRequestError(TechnicalError):
    """ComfyUI (or a proxy) refused a request with a 4xx that is no workflow rejection.

    A wrong token, a missing file: the environment, not the input, is at fault.
    """

    name = "comfyui-request-failed"


class PromptVanishedError(TechnicalError):
    """The prompt is in neither queue nor history: ComfyUI restarted and forgot it."""

    name = "prompt-vanished"


class ExecutionTimeoutError(TechnicalError):
    """The execution deadline passed; the prompt was interrupted or dequeued."""

    name = "execution-timeout"


class ComfyOutOfMemoryError(TechnicalError):
    """ComfyUI ran out of (GPU) memory; its memory was freed for the next attempt."""

    name = "comfyui-out-of-memory"


class WorkerShuttingDownError(TechnicalError):
    """The worker is draining; the task is handed back so another worker takes it."""

    name = "worker-shutting-down"


class WorkerNotReadyError(TechnicalError):
    """A claimed task found its ComfyUI or output store down, and it stayed down too long."""

    name = "worker-not-ready"


class AttemptFencedError(TechnicalError):
    """LittleHorse says this attempt is no longer current (timed out, superseded): no GPU work."""

    name = "attempt-fenced"


class OutputStorageError(TechnicalError):
    """Outputs could not be stored: disk full, read-only, name too long, store refused."""

    name = "output-storage-failed"
    exit_code = ExitCode.STORAGE
    http_status = 502


class ModelStorageError(TechnicalError):
    """A model could not be stored in COMFYUI_MODELS_DIR: no space, read-only, not set."""

    name = "model-storage-failed"
    exit_code = ExitCode.STORAGE
    http_status = 502


class ModelSourceError(UnreachableError):
    """A model's source failed (cut, timeout, 5xx, no answer); the next try resumes."""

    name = "model-source-failed"

    def __init__(self, message: str, *, maybe_delivered: bool = False, **details: Any) -> None:
        super().__init__(message, maybe_delivered=maybe_delivered, **details)


class LittleHorseError(TechnicalError):
    """LittleHorse refused a call (permission, invalid request, a conflict)."""

    name = "littlehorse-refused"
    exit_code = ExitCode.LITTLEHORSE
    http_status = 502


class LittleHorseUnavailableError(LittleHorseError):
    """LittleHorse could not be reached (down, restarting, wrong LHC_API_HOST/PORT)."""

    name = "littlehorse-unavailable"
    http_status = 503


class NotFoundError(LittleHorseError):
    """LittleHorse does not know the id asked for (a WfRun, a WfSpec)."""

    name = "not-found"
    exit_code = ExitCode.NOT_FOUND
    http_status = 404


class OutputNotReadableError(TechnicalError):
    """A job's file is not under this machine's output location, so it is not read."""

    name = "output-not-readable"
    exit_code = ExitCode.STORAGE
    http_status = 403


class InternalError(TechnicalError):
    """A bug: an exception no part of the worker expected. Please report it."""

    name = "internal-error"
    exit_code = ExitCode.INTERNAL


def business_errors() -> list[type[BusinessError]]:
    """Every concrete business error, for WfSpec handlers and docs."""
    return [cls for cls in all_errors() if issubclass(cls, BusinessError)]


def all_errors() -> list[type[ComfyWorkerError]]:
    """Every error class that can reach a user, in tree order."""
    found: list[type[ComfyWorkerError]] = []
    pending: list[type[ComfyWorkerError]] = [ComfyWorkerError]
    while pending:
        cls = pending.pop(0)
        pending.extend(cls.__subclasses__())
        if cls not in (ComfyWorkerError, BusinessError, TechnicalError, UnreachableError):
            found.append(cls)
    return found


def as_error(exc: BaseException, *, trace_chars: int = 0) -> ComfyWorkerError:
    """Our own error unchanged; anything else is a bug: an ``InternalError`` naming it.

    With ``trace_chars``, the message keeps that much of the traceback, so a TaskRun
    shows where the bug is.
    """
    if isinstance(exc, ComfyWorkerError):
        return exc
    message = f"{type(exc).__name__}: {exc}"
    if trace_chars:
        trace = "".join(traceback.format_exception(exc))
        message = f"{message}\n{bound_text(trace, trace_chars)}"
    return InternalError(message, exception_type=type(exc).__name__)
