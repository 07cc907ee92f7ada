"""The jobs page's JSON API: what each route does, apart from HTTP.

Lists and details come from ``jobs/client.py`` (LittleHorse); a submission from the form is
built and validated like ``main.py submit``'s. Output files are found by index in a
job's own result and read by ``jobs/outputs.py``, so no request names a path.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from comfyui_worker.errors import InvalidWorkflowError, NotFoundError
from comfyui_worker.jobs.client import JobQuery, Jobs
from comfyui_worker.jobs.input import build_task_input, check_parameters
from comfyui_worker.jobs.model import ACTIVE, JobStatus
from comfyui_worker.jobs.outputs import OutputReader
from comfyui_worker.jobs.settings import JobsSettings, UiSettings
from comfyui_worker.jobs.staging import INLINE_MAX_BYTES, image_source
from comfyui_worker.lh.lanes import wf_spec_name
from comfyui_worker.result import SavedOutput
from comfyui_worker.settings import DEFAULT_LANE
from comfyui_worker.workflow.images import decode_base64
from comfyui_worker.workflow.taskinput import ImageInput
from comfyui_worker.workflow.templates import load_templates

TABS = {
    "active": ACTIVE,
    "done": frozenset({JobStatus.COMPLETED}),
    "failed": frozenset({JobStatus.FAILED}),
    "cancelled": frozenset({JobStatus.CANCELLED}),
}
MAX_LIST = 100
JSON_SLACK_BYTES = 1024 * 1024  # the form's other fields, and base64's padding


class ImageUpload(BaseModel):
    """An image from the form: its name in the template and its bytes as a data: URL."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=100)
    base64: str = Field(min_length=1)


class SubmitForm(BaseModel):
    """What the page's form posts."""

    model_config = ConfigDict(extra="forbid")

    template: str = Field(min_length=1)
    params: dict[str, Any] = {}
    images: list[ImageUpload] = []
    lane: str = DEFAULT_LANE


class UiApi:
    """One method per route; errors are our own (the server maps them to statuses)."""

    def __init__(self, jobs: Jobs, settings: JobsSettings, ui: UiSettings) -> None:
        self.jobs = jobs
        self.templates = load_templates(settings.workflows_dir)
        self.reader = OutputReader(settings)
        self.lanes = (DEFAULT_LANE, *ui.lanes)
        self.wf_specs = tuple(wf_spec_name(lane) for lane in self.lanes)
        self.input_dir = settings.input_dir
        # without a shared input dir, an image must fit inside the job itself
        self.image_max_bytes = ui.upload_max_bytes if self.input_dir else INLINE_MAX_BYTES
        self.image_setting = (
            "WORKER_UI_UPLOAD_MAX_BYTES"
            if self.input_dir
            else ("COMFYUI_INPUT_DIR is not set, so images must fit inside the job")
        )

    @property
    def max_body_bytes(self) -> int:
        """The largest request the page accepts: its largest image as base64, and the rest."""
        return self.image_max_bytes * 4 // 3 + JSON_SLACK_BYTES

    def catalog(self) -> dict[str, Any]:
        """The templates the form offers, each with its parameters, and the lanes."""
        templates = [
            {"name": name, "params": self.templates.get(name).describe(declared_order=True)}
            for name in self.templates.names()
        ]
        return {
            "templates": templates,
            "lanes": list(self.lanes),
            "image_max_bytes": self.image_max_bytes,
            "image_limit": self.image_limit(),
        }

    def image_limit(self) -> str:
        """The size limit for images, as the form shows it beside an image field."""
        mb = f"{self.image_max_bytes / 1e6:.1f} MB"
        if self.input_dir:
            return f"up to {mb}"
        return f"up to {mb} (larger ones need COMFYUI_INPUT_DIR shared with the workers)"

    def tab(self, name: str, limit: int) -> list[dict[str, Any]]:
        """The newest jobs of one tab: active, done, failed or cancelled."""
        if name not in TABS:
            raise NotFoundError(f"no tab {name!r}; tabs: {', '.join(TABS)}")
        query = JobQuery(
            wf_specs=self.wf_specs, statuses=TABS[name], limit=max(1, min(limit, MAX_LIST))
        )
        return [job.summary() for job in self.jobs.recent(query)]

    def job(self, job_id: str) -> dict[str, Any]:
        """One job in full (images elided), with the ids of its retries."""
        job = self.jobs.get(job_id)
        return job.detail(self.jobs.retries_of(job))

    def submit(self, body: object) -> dict[str, Any]:
        """Start a job from the form."""
        try:
            form = SubmitForm.model_validate(body)
        except ValidationError as exc:
            raise InvalidWorkflowError(f"invalid form: {exc.errors()[0]['msg']}") from None
        if form.lane not in self.lanes:
            raise InvalidWorkflowError(f"unknown lane {form.lane!r}; lanes: {list(self.lanes)}")
        self.templates.get(form.template)  # an unknown name fails here, with suggestions
        task_input = build_task_input(
            {"template": form.template},
            params=form.params,
            images=[self._image(image) for image in form.images],
        )
        check_parameters(task_input, self.templates, _file_field)  # before a job exists
        submitted = self.jobs.submit(task_input, wf_spec=wf_spec_name(form.lane))
        return {"id": submitted.id}

    def _image(self, upload: ImageUpload) -> dict[str, str]:
        """An uploaded image as an ``images`` entry: inline, or staged in the input dir."""
        image = ImageInput(name=upload.name, base64=upload.base64)
        data = decode_base64(image, upload.base64, self.image_max_bytes, self.image_setting)
        return image_source(upload.name, data, self.input_dir)

    def retry(self, job_id: str) -> dict[str, Any]:
        """Run the job again; the new one records what it retries."""
        return {"id": self.jobs.retry(job_id).id}

    def cancel(self, job_id: str) -> dict[str, Any]:
        """Stop the job (its worker cancels the prompt)."""
        return self.jobs.cancel(job_id).summary()

    @contextlib.contextmanager
    def output(self, job_id: str, index: int) -> Iterator[tuple[SavedOutput, Iterator[bytes]]]:
        """Output ``index`` of the job's result, and its bytes."""
        job = self.jobs.get(job_id, cached=True)
        if not 0 <= index < len(job.outputs):
            raise NotFoundError(f"job {job_id} has no output {index}")
        with self.reader.open_output(job, job.outputs[index]) as chunks:
            yield job.outputs[index], chunks


def _file_field(name: str) -> str:
    """How the page's form gives a missing image: its file field."""
    return f"choose a file in the '{name}' field"
