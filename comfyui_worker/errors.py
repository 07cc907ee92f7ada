"""One exception hierarchy for everything that can go wrong running a workflow.

Every error knows its stable kebab-case ``name`` (the LittleHorse exception name),
whether retrying could help (``retryable``), and a JSON-able ``content`` a caller can
act on. HTTP errors become these in ``client.py``; LittleHorse terms appear only at
the worker boundary (``lh_worker.py``).
"""

from __future__ import annotations

from typing import Any, ClassVar


class ComfyWorkerError(Exception):
    """Base class: a failure with a stable name, a retry verdict and details."""

    name: ClassVar[str] = "comfyui-worker-error"
    retryable: ClassVar[bool] = False

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def content(self) -> dict[str, Any]:
        """A JSON-able description for task outputs, logs and the CLI."""
        return {"error": self.name, "message": self.message, **self.details}


# --- the request itself is wrong: retrying the same input cannot help -------------


class WorkflowError(ComfyWorkerError):
    """The task's input is wrong; fix the workflow, template or parameters."""


class InvalidWorkflowError(WorkflowError):
    """Bad graph shape, UI format, unknown node, missing model, bad parameter, or a 400."""

    name = "invalid-workflow"


class OutputRejectedError(WorkflowError):
    """An output is unsafe to save (path escapes the output dir) or over the size cap."""

    name = "output-rejected"


class ExecutionFailedError(ComfyWorkerError):
    """A node raised inside ComfyUI (not out-of-memory): the graph or its inputs are at fault."""

    name = "execution-failed"


class ExecutionInterruptedError(ComfyWorkerError):
    """Someone interrupted the prompt in ComfyUI; rerunning it would defy them."""

    name = "execution-interrupted"


class ComfyRequestError(ComfyWorkerError):
    """ComfyUI refused a request with a 4xx other than a workflow rejection (e.g. 404)."""

    name = "comfyui-request-failed"


# --- the environment failed: the same input may well succeed on a retry ------------


class TransientError(ComfyWorkerError):
    """A technical failure; LittleHorse retries it per the WfSpec's retry policy."""

    name = "comfyui-transient"
    retryable = True


class ComfyUnavailableError(TransientError):
    """ComfyUI could not be reached (connection refused, timeout) after all retries."""

    name = "comfyui-unavailable"


class ComfyServerError(TransientError):
    """ComfyUI answered 5xx (after retries) or something that is not its API."""

    name = "comfyui-server-error"


class PromptVanishedError(TransientError):
    """The prompt is in neither queue nor history: ComfyUI restarted and forgot it."""

    name = "prompt-vanished"


class ExecutionTimeoutError(TransientError):
    """The execution deadline passed; the prompt was interrupted or dequeued."""

    name = "execution-timeout"


class ComfyOutOfMemoryError(TransientError):
    """ComfyUI ran out of (GPU) memory; another attempt may land on a freer GPU."""

    name = "comfyui-out-of-memory"


class WorkerShuttingDownError(TransientError):
    """The worker is draining; the task is handed back so another worker takes it."""

    name = "worker-shutting-down"
