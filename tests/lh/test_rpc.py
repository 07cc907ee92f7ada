"""The one mapping of gRPC failures to our errors (``lh/rpc.py``)."""

from __future__ import annotations

import grpc
import pytest

from comfyui_worker.errors import LittleHorseError, LittleHorseUnavailableError, NotFoundError
from comfyui_worker.lh.rpc import describe, is_transient, to_error


class Failed(grpc.RpcError):
    """A failed call as grpc raises it: a code and details."""

    def __init__(self, code: grpc.StatusCode, details: str = "") -> None:
        self._code, self._details = code, details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


@pytest.mark.parametrize(
    "code",
    [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNKNOWN],
)
def test_transient_codes_are_unavailable_and_retried(code: grpc.StatusCode):
    """The worker retries these and the commands exit 8 saying what to check."""
    error = to_error(Failed(code), "GetWfRun", "lh:2023")
    assert is_transient(Failed(code))
    assert type(error) is LittleHorseUnavailableError
    assert "lh:2023" in error.message and "LHC_API_HOST" in error.message


@pytest.mark.parametrize(
    "code", [grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED]
)
def test_a_refusal_of_credentials_is_not_unavailable(code: grpc.StatusCode):
    """PERMISSION_DENIED is never retried as if LittleHorse were down."""
    error = to_error(Failed(code), "PutCheckpoint", "lh:2023")
    assert not is_transient(Failed(code))
    assert type(error) is LittleHorseError and "LHC_TENANT_ID" in error.message


def test_not_found_and_other_refusals_keep_the_servers_detail():
    """NOT_FOUND names what is missing; INVALID_ARGUMENT keeps the detail, bounded."""
    missing = to_error(Failed(grpc.StatusCode.NOT_FOUND, "no WfRun x"), "WfRun", "lh:2023")
    assert type(missing) is NotFoundError and "no WfRun x" in missing.message
    bad = to_error(Failed(grpc.StatusCode.INVALID_ARGUMENT, "y" * 5000), "RunWf", "lh:2023")
    assert type(bad) is LittleHorseError and bad.details["code"] == "INVALID_ARGUMENT"
    assert len(bad.message) < 400


def test_describe_is_one_line_for_health():
    """``<call>: <CODE>: <detail>``."""
    assert describe(Failed(grpc.StatusCode.UNAVAILABLE, "down"), "PollTask") == (
        "PollTask: UNAVAILABLE: down"
    )
