"""Settings from the environment, validated once at start-up.

This is the only module that reads the environment (the LittleHorse SDK reads its
own ``LHC_*``/``LHW_*`` variables, which pass through unchanged). Each field's alias
is the exact variable name, so a validation error can name the variable.

Credentials in ``COMFYUI_BASE_URL`` (``http://user:pass@host``) are split off here:
every other module sees the URL without them (``base_url_str``), so they can reach
no log, result, manifest or error.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, TypeVar
from urllib.parse import unquote, urlsplit, urlunsplit

from pydantic import (
    AnyHttpUrl,
    BeforeValidator,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from comfyui_worker.errors import ConfigError

GIB = 1024**3
MIB = 1024**2
TASK_NAME_PATTERN = r"^[A-Za-z0-9]([-A-Za-z0-9]*[A-Za-z0-9])?$"
DEFAULT_LANE = "default"


def is_lane_name(value: str) -> bool:
    """Kebab-case, as a lane's name becomes part of TaskDef and WfSpec names."""
    return re.fullmatch(TASK_NAME_PATTERN, value) is not None


def _split_commas(value: Any) -> Any:
    """An environment string ``a, b,c`` as a tuple (blank items dropped); others pass."""
    if isinstance(value, str):
        return tuple(item.strip() for item in value.split(",") if item.strip())
    return value


#: A comma-separated list in one variable (not pydantic-settings' JSON decoding).
CommaList = Annotated[tuple[str, ...], NoDecode, BeforeValidator(_split_commas)]


class _EnvSettings(BaseSettings):
    model_config = SettingsConfigDict(
        populate_by_name=False, extra="ignore", frozen=True, case_sensitive=True
    )


# Prompts a worker may queue in ComfyUI behind the running one. Each holds a task away
# from idle workers elsewhere and adds an execution budget to the task timeout; two
# already cover a cycle twice as long as a 10 ms task, so more than 4 only hoards work.
MAX_PREFETCH = 4


class DeadlineSettings(_EnvSettings):
    """The execution deadline and prefetch: all ``register`` needs to size the task timeout."""

    history_timeout_s: float = Field(600.0, gt=0, alias="COMFYUI_HISTORY_TIMEOUT_SEC")
    prefetch: int = Field(0, ge=0, le=MAX_PREFETCH, alias="WORKER_PREFETCH")
    task_timeout_s: int | None = Field(None, gt=0, alias="WORKER_TASK_TIMEOUT_SEC")

    @property
    def slots(self) -> int:
        """Prompts the worker keeps in ComfyUI: the executing one, plus those queued behind it."""
        return 1 + self.prefetch

    @property
    def task_slots(self) -> int:
        """Tasks inside the task function at once (the SDK's slots): one more than ``slots``.

        The extra one saves a finished prompt's outputs while the next task's prompt is
        already being submitted, so saving is off the GPU's critical path.
        """
        return self.slots + 1


class TemplateSettings(_EnvSettings):
    """Where the templates are: the worker renders them, the job side submits through them."""

    workflows_dir: Path = Field(Path("workflows"), alias="COMFYUI_WORKFLOWS_DIR")


class InputDirSettings(_EnvSettings):
    """The directory path image sources are read from; the job side stages large images there."""

    input_dir: Path | None = Field(None, alias="COMFYUI_INPUT_DIR")


class OutputStoreSettings(_EnvSettings):
    """Where outputs go and the object store's credentials: the worker's and the job side's."""

    output_dir: Path | None = Field(None, alias="COMFYUI_OUTPUT_DIR")
    output_url: str | None = Field(None, alias="WORKER_OUTPUT_URL")
    aws_access_key_id: SecretStr | None = Field(None, alias="AWS_ACCESS_KEY_ID")
    aws_secret_access_key: SecretStr | None = Field(None, alias="AWS_SECRET_ACCESS_KEY")
    aws_session_token: SecretStr | None = Field(None, alias="AWS_SESSION_TOKEN")
    aws_region: str | None = Field(None, alias="AWS_REGION")
    aws_endpoint_url: str | None = Field(None, alias="AWS_ENDPOINT_URL")

    @property
    def output_location(self) -> str | None:
        """Where outputs go: WORKER_OUTPUT_URL, else COMFYUI_OUTPUT_DIR (absolute), else None."""
        if self.output_url:
            return self.output_url
        return None if self.output_dir is None else str(self.output_dir.resolve())

    def store_config(self) -> dict[str, str]:
        """The object store's credentials and endpoint (the only place secrets are revealed)."""
        values = {
            "AWS_ACCESS_KEY_ID": self.aws_access_key_id,
            "AWS_SECRET_ACCESS_KEY": self.aws_secret_access_key,
            "AWS_SESSION_TOKEN": self.aws_session_token,
            "AWS_REGION": self.aws_region,
            "AWS_ENDPOINT_URL": self.aws_endpoint_url,
        }
        return {
            name: value.get_secret_value() if isinstance(value, SecretStr) else value
            for name, value in values.items()
            if value is not None
        }


class ModelSettings(_EnvSettings):
    """Models on demand: where ComfyUI's models are, how much the worker may fill, sources."""

    models_dir: Path | None = Field(None, alias="COMFYUI_MODELS_DIR")
    models_max_bytes: int | None = Field(None, gt=0, alias="COMFYUI_MODELS_MAX_BYTES")
    models_url_allow: CommaList = Field((), alias="COMFYUI_MODELS_URL_ALLOW")
    models_token: SecretStr | None = Field(None, alias="COMFYUI_MODELS_TOKEN")
    models_token_hosts: CommaList = Field(
        ("huggingface.co", "hf.co"), alias="COMFYUI_MODELS_TOKEN_HOSTS"
    )
    models_timeout_s: float = Field(3600.0, gt=0, alias="COMFYUI_MODELS_TIMEOUT_SEC")

    def models_headers(self, host: str) -> dict[str, str]:
        """The bearer token, only for the hosts it is meant for (never a task's own host)."""
        host = host.lower().rstrip(".")
        if self.models_token is None or host not in self.models_token_hosts:
            return {}
        return {"Authorization": f"Bearer {self.models_token.get_secret_value()}"}


class ComfySettings(
    DeadlineSettings, OutputStoreSettings, TemplateSettings, InputDirSettings, ModelSettings
):
    """How to reach ComfyUI, how long to wait, and where outputs go."""

    base_url: AnyHttpUrl = Field(alias="COMFYUI_BASE_URL")
    presign_ttl_s: float | None = Field(None, gt=0, alias="WORKER_OUTPUT_PRESIGN_TTL_SEC")
    poll_interval_s: float = Field(2.0, gt=0, le=300, alias="COMFYUI_POLL_INTERVAL_SEC")
    http_timeout_s: float = Field(30.0, gt=0, alias="COMFYUI_HTTP_TIMEOUT_SEC")
    http_deadline_s: float = Field(60.0, gt=0, alias="COMFYUI_HTTP_DEADLINE_SEC")
    http_retries: int = Field(3, ge=0, le=20, alias="COMFYUI_HTTP_RETRIES")
    include_temp_outputs: bool = Field(False, alias="COMFYUI_INCLUDE_TEMP_OUTPUTS")
    max_output_bytes: int = Field(8 * GIB, gt=0, alias="COMFYUI_MAX_OUTPUT_BYTES")
    fsync: bool = Field(True, alias="COMFYUI_FSYNC")
    preflight: bool = Field(True, alias="COMFYUI_PREFLIGHT")
    auth_token: SecretStr | None = Field(None, alias="COMFYUI_AUTH_TOKEN")
    http_headers: dict[str, str] = Field(default_factory=dict, alias="COMFYUI_HTTP_HEADERS")
    allow_input_urls: bool = Field(False, alias="COMFYUI_ALLOW_INPUT_URLS")
    input_url_allow: CommaList = Field((), alias="COMFYUI_INPUT_URL_ALLOW")
    input_url_trust_env: bool = Field(False, alias="COMFYUI_INPUT_URL_TRUST_ENV")
    input_url_timeout_s: float = Field(60.0, gt=0, alias="COMFYUI_INPUT_URL_TIMEOUT_SEC")
    max_input_image_bytes: int = Field(50 * MIB, gt=0, alias="COMFYUI_MAX_INPUT_IMAGE_BYTES")
    free_memory_every: int = Field(0, ge=0, alias="COMFYUI_FREE_MEMORY_EVERY")
    advertised: AnyHttpUrl | None = Field(None, alias="COMFYUI_ADVERTISED_URL")
    warmup_workflow: str | None = Field(None, alias="WORKER_WARMUP_WORKFLOW")

    @model_validator(mode="after")
    def _somewhere_for_outputs(self) -> ComfySettings:
        """Outputs need a home: a directory, or an object store URL."""
        if self.output_dir is None and not self.output_url:
            raise ValueError(
                "COMFYUI_OUTPUT_DIR: is required but not set (or set WORKER_OUTPUT_URL to "
                "a directory or s3://bucket/prefix)"
            )
        return self

    @property
    def output_location(self) -> str:
        """Where outputs go: WORKER_OUTPUT_URL, else COMFYUI_OUTPUT_DIR (one is set).

        A directory is made absolute, so results name it the same from anywhere.
        """
        return self.output_url or str(Path(str(self.output_dir)).resolve())

    @field_validator("http_headers", mode="before")
    @classmethod
    def _parse_headers(cls, value: Any) -> Any:
        """Accept a JSON object of header name to value, as env vars are strings."""
        if isinstance(value, str):
            parsed = json.loads(value) if value.strip() else {}
            if not isinstance(parsed, dict):
                raise ValueError('must be a JSON object such as {"X-Api-Key": "..."}')
            return parsed
        return value

    @property
    def base_url_str(self) -> str:
        """The base URL without credentials or a trailing slash: safe to log and join."""
        return redact_url(str(self.base_url)).rstrip("/")

    @property
    def advertised_url(self) -> str:
        """The address peers can reach this ComfyUI at (recorded with each submission)."""
        chosen = self.advertised if self.advertised is not None else self.base_url
        return redact_url(str(chosen)).rstrip("/")

    def basic_auth(self) -> tuple[str, str] | None:
        """``user:pass`` from ``COMFYUI_BASE_URL``, sent as an Authorization header."""
        if self.base_url.username is None:
            return None
        return (unquote(self.base_url.username), unquote(self.base_url.password or ""))

    def request_headers(self) -> dict[str, str]:
        """Headers sent on every request (auth proxy support)."""
        headers = dict(self.http_headers)
        if self.auth_token is not None:
            headers["Authorization"] = f"Bearer {self.auth_token.get_secret_value()}"
        return headers


class WorkerSettings(_EnvSettings):
    """The LittleHorse side: task name, concurrency, drain and health endpoint."""

    task_name: str = Field(
        "execute-comfyui-workflow", alias="LHW_TASK_NAME", pattern=TASK_NAME_PATTERN
    )
    num_worker_threads: int = Field(1, alias="LHW_NUM_WORKER_THREADS")
    drain_timeout_s: float = Field(300.0, ge=0, alias="WORKER_DRAIN_TIMEOUT_SEC")
    ready_wait_s: float = Field(120.0, ge=0, alias="WORKER_READY_WAIT_SEC")
    http_port: int = Field(8089, ge=0, le=65535, alias="WORKER_HTTP_PORT")
    http_host: str = Field("0.0.0.0", alias="WORKER_HTTP_HOST")
    log_format: str = Field("console", pattern="^(console|json)$", alias="WORKER_LOG_FORMAT")
    log_level: str = Field("info", pattern="^(debug|info|warning|error)$", alias="WORKER_LOG_LEVEL")
    lh_api_host: str | None = Field(None, alias="LHC_API_HOST")
    lh_api_port: int = Field(2023, alias="LHC_API_PORT")

    @field_validator("num_worker_threads")
    @classmethod
    def _one_thread(cls, value: int) -> int:
        """One worker drives one ComfyUI (one GPU queue); more would only queue there."""
        if value != 1:
            raise ValueError(
                "must be 1: one worker drives one ComfyUI, which runs one prompt at a "
                "time; scale out by running more worker+ComfyUI pairs"
            )
        return value

    @property
    def lh_address(self) -> str:
        """``host:port`` of LittleHorse as the SDK will dial it."""
        return f"{self.lh_api_host or 'localhost'}:{self.lh_api_port}"


def redact_url(url: str) -> str:
    """``url`` without ``user:pass@``: what logs, errors and results may show."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def _format(error: ValidationError) -> str:
    """One line per bad variable: ``NAME: what is wrong`` (never the value itself)."""
    lines = []
    for item in error.errors():
        name = ".".join(str(part) for part in item["loc"]) or "settings"
        reason = "is required but not set" if item["type"] == "missing" else item["msg"]
        lines.append(f"{name}: {reason}")
    return "\n".join(lines)


_S = TypeVar("_S", bound=_EnvSettings)


def load(kind: type[_S], env: Mapping[str, str] | None = None) -> _S:
    """Read one settings class from ``env`` (default: the process environment)."""
    try:
        return kind.model_validate(dict(os.environ if env is None else env))
    except ValidationError as exc:
        raise ConfigError(_format(exc)) from None


def load_comfy(env: Mapping[str, str] | None = None) -> ComfySettings:
    """Read ComfyUI settings from ``env`` (default: the process environment)."""
    return load(ComfySettings, env)


def load_worker(env: Mapping[str, str] | None = None) -> WorkerSettings:
    """Read worker settings from ``env`` (default: the process environment)."""
    return load(WorkerSettings, env)
