"""The jobs API of the 2026 releases (0.38): a prompt seen as a job, across queue and history.

Served: ``GET /api/jobs/{id}`` and ``POST /api/jobs/{id}/cancel``, with the shapes of
docs/comfyui-api.md; the listing and the batch cancel are not served.
"""

from __future__ import annotations

import uuid
from typing import Any

from aiohttp import web

from fakes.comfyui.queue import WorkQueue
from fakes.comfyui.simulate import Job

_MEDIA = ("images", "video", "audio", "3d")  # output kinds with a visual preview


def is_canonical_uuid(value: Any) -> bool:
    """A UUID string in lowercase hyphenated form (what 0.38 accepts as a prompt_id)."""
    try:
        return isinstance(value, str) and str(uuid.UUID(value)) == value
    except ValueError:
        return False


def _summary(outputs: dict[str, Any]) -> tuple[int, int, dict[str, Any] | None]:
    """(outputs_count, previewable_outputs_count, preview_output) of /history outputs.

    File items count, and those under a media kind are previewable; text strings do not
    count. The preview is the first saved (``type: output``) media file, else the first
    other one (a temp preview), else the first text, truncated to 1024 characters. (The
    real rules also cover 3D, audio, video and text files, which no fake node makes.)
    """
    count, previewable = 0, 0
    picks: dict[str, Any] = {"output": None, "other": None, "text": None}
    for node_id, output in outputs.items():
        for kind, items in output.items():
            for item in items if kind != "animated" else []:
                if isinstance(item, str) and kind == "text" and not picks["text"]:
                    cut = {"truncated": True} if len(item) > 1024 else {}
                    picks["text"] = {"content": item[:1024], "nodeId": node_id, "mediaType": kind}
                    picks["text"].update(cut)
                if not isinstance(item, dict):
                    continue
                count += 1
                if kind in _MEDIA:
                    previewable += 1
                    slot = "output" if item.get("type") == "output" else "other"
                    picks[slot] = picks[slot] or {**item, "nodeId": node_id, "mediaType": kind}
    return count, previewable, picks["output"] or picks["other"] or picks["text"]


def _job(prompt_id: str, status: str, item: list[Any], **more: Any) -> dict[str, Any]:
    number, _, graph, extra_data, _ = item
    workflow = (extra_data.get("extra_pnginfo") or {}).get("workflow") or {}
    job = {"id": prompt_id, "status": status, "priority": number}
    job |= {"create_time": extra_data.get("create_time"), "workflow_id": workflow.get("id")}
    job |= more | {"workflow": {"prompt": graph, "extra_data": extra_data}}
    return {key: value for key, value in job.items() if value is not None}


def queued_job(job: Job, status: str) -> dict[str, Any]:
    """A pending or running prompt as a job."""
    return _job(job.prompt_id, status, job.item(), outputs_count=0, previewable_outputs_count=0)


def finished_job(prompt_id: str, entry: dict[str, Any]) -> dict[str, Any]:
    """A /history entry as a job."""
    status, times, error = entry.get("status") or {}, {}, None
    for event, data in status.get("messages", []):
        if event == "execution_start":
            times["execution_start_time"] = data.get("timestamp")
        elif event in ("execution_success", "execution_error", "execution_interrupted"):
            times["execution_end_time"] = data.get("timestamp")
            error = data if event == "execution_error" else error
    interrupted = any(event == "execution_interrupted" for event, _ in status.get("messages", []))
    state = "completed"
    if status.get("status_str") == "error":
        state = "cancelled" if interrupted else "failed"
    count, previewable, preview = _summary(entry.get("outputs", {}))
    return _job(
        prompt_id,
        state,
        entry["prompt"],
        **times,
        execution_error=error,
        outputs_count=count,
        previewable_outputs_count=previewable,
        preview_output=preview,
        outputs=entry.get("outputs", {}),
        execution_status=status,
    )


class JobsApi:
    """The /api/jobs routes over one WorkQueue."""

    def __init__(self, queue: WorkQueue) -> None:
        self.queue = queue

    def routes(self) -> list[tuple[str, str, Any]]:
        """(method, path, handler): these exist only under /api."""
        return [("GET", "/api/jobs/{id}", self.get), ("POST", "/api/jobs/{id}/cancel", self.cancel)]

    async def get(self, request: web.Request) -> web.StreamResponse:
        """One job: looked up in history first, then running, then pending."""
        prompt_id, queue = request.match_info["id"], self.queue
        if prompt_id in queue.history:
            return web.json_response(finished_job(prompt_id, queue.history[prompt_id]))
        if queue.running is not None and queue.running.prompt_id == prompt_id:
            return web.json_response(queued_job(queue.running, "in_progress"))
        for job in queue.pending:
            if job.prompt_id == prompt_id:
                return web.json_response(queued_job(job, "pending"))
        return web.json_response({"error": "Job not found"}, status=404)

    async def cancel(self, request: web.Request) -> web.StreamResponse:
        """Interrupt if running, dequeue if pending (one step, so never the wrong prompt)."""
        return web.json_response({"cancelled": self.queue.cancel(request.match_info["id"])})
