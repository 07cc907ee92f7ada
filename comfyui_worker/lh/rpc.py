"""The one mapping of gRPC failures to our errors, as ``transport.py`` is for HTTP.

Transient codes (the server away, a call that timed out, a stream torn down) are
worth retrying and become ``LittleHorseUnavailableError``; NOT_FOUND becomes
``NotFoundError``; a refusal of our credentials says which settings to check;
anything else is LittleHorse refusing the call, with its own detail.
"""

from __future__ import annotations

import grpc

from comfyui_worker.errors import LittleHorseError, LittleHorseUnavailableError, NotFoundError

TRANSIENT = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNKNOWN}
)
REFUSED = frozenset({grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED})
MAX_DETAIL_CHARS = 300


def code_of(exc: grpc.RpcError) -> grpc.StatusCode:
    """The call's status code (UNKNOWN for an error that carries none)."""
    code: grpc.StatusCode = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
    return code


def detail_of(exc: grpc.RpcError) -> str:
    """The server's detail text, bounded."""
    detail = (exc.details() if hasattr(exc, "details") else "") or ""
    return str(detail)[:MAX_DETAIL_CHARS]


def is_transient(exc: grpc.RpcError) -> bool:
    """Whether the same call may succeed if made again later."""
    return code_of(exc) in TRANSIENT


def describe(exc: grpc.RpcError, call: str) -> str:
    """``<call>: <CODE>: <detail>``, for health and logs."""
    return f"{call}: {code_of(exc).name}: {detail_of(exc)[:200]}"


def to_error(exc: grpc.RpcError, call: str, address: str) -> LittleHorseError:
    """Our error for a failed call to LittleHorse at ``address``."""
    code = code_of(exc)
    if code in TRANSIENT:
        return LittleHorseUnavailableError(
            f"LittleHorse at {address} is unreachable ({code.name}); check "
            "LHC_API_HOST, LHC_API_PORT and LHC_API_PROTOCOL, and that the server runs",
            address=address,
            call=call,
        )
    if code == grpc.StatusCode.NOT_FOUND:
        return NotFoundError(f"LittleHorse has no such {call}: {detail_of(exc)}", call=call)
    if code in REFUSED:
        return LittleHorseError(
            f"LittleHorse at {address} refused {call} ({code.name}); check the "
            "LHC_* credentials and LHC_TENANT_ID",
            address=address,
            call=call,
        )
    return LittleHorseError(
        f"LittleHorse refused {call}: {code.name}: {detail_of(exc)}", call=call, code=code.name
    )
