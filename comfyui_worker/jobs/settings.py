"""Settings of the job commands and the jobs page, read with ``settings.load``.

The job side needs no ComfyUI: only the templates (to build a submission), where the
worker saves outputs (to read them back for ``--download`` and the page), and for the
page its address and token. The output and store variables are the worker's own, so
one environment serves both. A page reachable from other machines must have a token:
a non-loopback ``WORKER_UI_HOST`` without ``WORKER_UI_TOKEN`` is refused at start.
"""

from __future__ import annotations

import ipaddress

from pydantic import Field, SecretStr, field_validator, model_validator

from comfyui_worker.settings import (
    DEFAULT_LANE,
    MIB,
    CommaList,
    InputDirSettings,
    OutputStoreSettings,
    TemplateSettings,
    _EnvSettings,
    is_lane_name,
)

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})


class JobsSettings(OutputStoreSettings, TemplateSettings, InputDirSettings):
    """Templates to submit, the outputs to read back, the input dir it shares with workers.

    Images too large to travel inside a job are staged in that input dir.
    """


class UiSettings(_EnvSettings):
    """Where the jobs page listens, who may use it, and which lanes it shows."""

    host: str = Field("127.0.0.1", min_length=1, alias="WORKER_UI_HOST")
    port: int = Field(8090, ge=0, le=65535, alias="WORKER_UI_PORT")
    token: SecretStr | None = Field(None, alias="WORKER_UI_TOKEN")
    lanes: CommaList = Field((), alias="WORKER_UI_LANES")
    upload_max_bytes: int = Field(16 * MIB, gt=0, le=1024 * MIB, alias="WORKER_UI_UPLOAD_MAX_BYTES")

    @field_validator("token")
    @classmethod
    def _long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        """A guessable token is no protection: at least 16 characters."""
        if value is not None and len(value.get_secret_value()) < 16:
            raise ValueError("must be at least 16 characters (e.g. `openssl rand -hex 24`)")
        return value

    @field_validator("lanes")
    @classmethod
    def _kebab_lanes(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        """Lane names become parts of TaskDef and WfSpec names."""
        bad = [lane for lane in value if not is_lane_name(lane)]
        if bad:
            raise ValueError(f"lane names must be kebab-case, got {bad}")
        if DEFAULT_LANE in value:
            raise ValueError(f"{DEFAULT_LANE!r} is always listed; name only the other lanes")
        return value

    @model_validator(mode="after")
    def _token_off_loopback(self) -> UiSettings:
        """Anyone on the network could submit and cancel jobs: require a token there."""
        if self.token is None and not is_loopback(self.host):
            raise ValueError(
                f"WORKER_UI_HOST: {self.host} is reachable from other machines; "
                "set WORKER_UI_TOKEN too, or bind to 127.0.0.1"
            )
        return self


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine only (127.0.0.0/8, ::1, localhost)."""
    name = host.strip("[]").lower()
    if name in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False
