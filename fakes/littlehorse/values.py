"""VariableValue typing rules the server applies (``TypeDefinitionModel``, ``TypeCastingUtils``)."""

# mypy: disable-error-code="no-untyped-call"

from __future__ import annotations

import json
import math
import re
from decimal import Decimal
from typing import Any, TypeVar

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from littlehorse.model import LHStatus, TypeDefinition, VariableType, VariableValue

_NAME_RE = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9]*[A-Za-z0-9])?$")

#: Failure names the server reserves; any other name is a business EXCEPTION
#: (``LHConstants.RESERVED_EXCEPTION_NAMES``).
RESERVED_FAILURES = frozenset(
    {
        "CHILD_FAILURE",
        "VAR_SUB_ERROR",
        "VAR_MUTATION_ERROR",
        "TASK_FAILURE",
        "TIMEOUT",
        "VAR_ERROR",
        "TASK_ERROR",
        "INTERNAL_ERROR",
        "USER_TASK_CANCELLED",
    }
)

_PRIMITIVE_OF_CASE = {
    "json_obj": VariableType.JSON_OBJ,
    "json_arr": VariableType.JSON_ARR,
    "double": VariableType.DOUBLE,
    "bool": VariableType.BOOL,
    "str": VariableType.STR,
    "int": VariableType.INT,
    "bytes": VariableType.BYTES,
    "wf_run_id": VariableType.WF_RUN_ID,
    "utc_timestamp": VariableType.TIMESTAMP,
}
_CASTABLE_TO_STR = frozenset(
    {
        VariableType.STR,
        VariableType.INT,
        VariableType.DOUBLE,
        VariableType.BOOL,
        VariableType.BYTES,
        VariableType.WF_RUN_ID,
    }
)


def is_valid_name(name: str) -> bool:
    """``LHUtil.isValidLHName``: a hostname-like (kebab-case) name."""
    return bool(_NAME_RE.match(name))


def is_null(value: VariableValue) -> bool:
    """A VariableValue with nothing set is LittleHorse's null."""
    return value.WhichOneof("value") is None


def primitive_of(value: VariableValue) -> int | None:
    """The primitive VariableType of a value, or None for null and struct/array/map values."""
    case = value.WhichOneof("value")
    return None if case is None else _PRIMITIVE_OF_CASE.get(case)


def enum_name(enum: Any, value: int) -> str:
    """The name of a protobuf enum value (``LHStatus``, ``VariableType``...)."""
    return str(enum.Name(value))


def failure_status(failure_name: str) -> LHStatus:
    """A reserved failure makes the NodeRun/ThreadRun ERROR, any other EXCEPTION."""
    return LHStatus.ERROR if failure_name in RESERVED_FAILURES else LHStatus.EXCEPTION


def type_name(type_def: TypeDefinition) -> str:
    """Like ``TypeDefinitionModel.toString()``."""
    case = type_def.WhichOneof("defined_type")
    if case == "primitive_type":
        name = enum_name(VariableType, type_def.primitive_type)
    elif case is None:
        name = "DEFINEDTYPE_NOT_SET"
    else:
        name = case.upper()
    return name + (" MASKED" if type_def.masked else "")


def _value_type_name(value: VariableValue) -> str:
    primitive = primitive_of(value)
    if primitive is not None:
        return enum_name(VariableType, primitive)
    return str(value.WhichOneof("value")).upper()


def can_be_type(source: int, target: int) -> bool:
    """``TypeCastingUtils.canBeType``: same type, any primitive into STR, INT into DOUBLE."""
    if source == target:
        return True
    if target == VariableType.STR and source in _CASTABLE_TO_STR:
        return True
    return source == VariableType.INT and target == VariableType.DOUBLE


def incompatibility(type_def: TypeDefinition, value: VariableValue) -> str | None:
    """Why ``value`` cannot be stored as ``type_def`` (``validateCompatibility``), or None."""
    if is_null(value):
        return None
    case = type_def.WhichOneof("defined_type")
    if case is None:
        return None
    primitive = primitive_of(value)
    if case == "primitive_type":
        if primitive is not None and can_be_type(primitive, type_def.primitive_type):
            return None
    elif primitive is None:
        return None  # struct/array/map values: the fake does not check their shape
    return (
        f"Value of type {_value_type_name(value)} is not compatible with expected type "
        f"{type_name(type_def)}"
    )


def cast(value: VariableValue, type_def: TypeDefinition) -> VariableValue:
    """``TypeCastingUtils.applyCast`` for the implicit casts ``can_be_type`` allows."""
    source = primitive_of(value)
    if type_def.WhichOneof("defined_type") != "primitive_type" or source is None:
        return value
    target = type_def.primitive_type
    if source == target:
        return value
    if target == VariableType.STR:
        case = value.WhichOneof("value")
        raw = getattr(value, str(case))
        if isinstance(raw, bool):
            return VariableValue(str="true" if raw else "false")
        if isinstance(raw, bytes):
            return VariableValue(str=raw.decode("utf-8", "replace"))
        if case == "wf_run_id":
            return VariableValue(str=value.wf_run_id.id)
        return VariableValue(str=str(raw))
    if source == VariableType.INT and target == VariableType.DOUBLE:
        return VariableValue(double=float(value.int))
    return value


def type_def_of(var_def) -> TypeDefinition:
    """A VariableDef's type; old clients set the deprecated ``type`` instead of ``type_def``."""
    if var_def.HasField("type_def") or not var_def.HasField("type"):
        type_def: TypeDefinition = var_def.type_def
        return type_def
    return TypeDefinition(primitive_type=var_def.type, masked=var_def.masked_value)


MASK = "*****"  # LHConstants.STRING_MASK: what reads show instead of a masked value


# ---------------------------------------------------------------------- JSON values
#
# The server parses every JSON_OBJ/JSON_ARR value it receives with Gson
# (``LHUtil.LH_GSON``: numbers as Long, else Double; nulls kept) and serves it
# re-serialized: compact, keys in their order, Gson's escaping. A value that does not
# parse as its type is kept as it came.

_M = TypeVar("_M", bound=Message)
_LONG_RANGE = (-(2**63), 2**63 - 1)
# Gson escapes these (HTML-safe mode) where Python's json keeps them; outside strings
# they never occur in JSON text, so replacing them everywhere is safe.
_GSON_ESCAPES = str.maketrans(
    {
        "<": "\\u003c",
        ">": "\\u003e",
        "&": "\\u0026",
        "=": "\\u003d",
        "'": "\\u0027",
        "\u2028": "\\u2028",
        "\u2029": "\\u2029",
    }
)


class _NotGson(ValueError):
    """The text is JSON Gson would not turn back into the same kind of value."""


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _NotGson(f"duplicate key {key}")  # Gson's map adapter refuses these
        out[key] = value
    return out


def java_double(value: float) -> str:
    """``Double.toString``: shortest digits; plain in [1e-3, 1e7), else ``d.dddE-n``."""
    if value == 0:
        return "-0.0" if math.copysign(1.0, value) < 0 else "0.0"
    sign = "-" if value < 0 else ""
    digits_tuple, exponent = Decimal(repr(abs(value))).as_tuple()[1:]
    digits = "".join(map(str, digits_tuple)).rstrip("0") or "0"
    assert isinstance(exponent, int)
    exponent += len("".join(map(str, digits_tuple))) - len(digits)
    point = len(digits) - 1 + exponent  # the decimal exponent of the first digit
    if 1e-3 <= abs(value) < 1e7:
        if point >= 0:
            whole = digits[: point + 1].ljust(point + 1, "0")
            return f"{sign}{whole}.{digits[point + 1 :] or '0'}"
        return f"{sign}0.{'0' * (-point - 1)}{digits}"
    return f"{sign}{digits[0]}.{digits[1:] or '0'}E{point}"


def _gson_text(value: Any) -> str:
    if isinstance(value, dict):
        return "{" + ",".join(f"{_gson_string(k)}:{_gson_text(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(_gson_text(v) for v in value) + "]"
    if isinstance(value, str):
        return _gson_string(value)
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        if _LONG_RANGE[0] <= value <= _LONG_RANGE[1]:
            return str(value)
        value = float(value)  # Long.parseLong fails: Gson takes a Double
    if not math.isfinite(value):
        raise _NotGson("not a finite number")
    return java_double(value)


def _gson_string(text: str) -> str:
    return json.dumps(text, ensure_ascii=False).translate(_GSON_ESCAPES)


def compact_json(text: str, expected: type) -> str | None:
    """What the server stores for this JSON text: compact Gson output, or None for null.

    Text that is not JSON of the ``expected`` type (dict or list) comes back unchanged.
    Gson reads leniently; the fake accepts strict JSON only, plus NaN/Infinity, which
    Gson reads as strings.
    """
    try:
        parsed = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=str)
        if parsed is None:
            return None
        if not isinstance(parsed, expected):
            return text
        compact = _gson_text(parsed)
        compact.encode("utf-8")  # lone surrogates: protobuf could not carry it
    except (ValueError, RecursionError, UnicodeEncodeError):
        return text
    return compact


def compact_value(value: VariableValue) -> None:
    """Re-serialize a JSON_OBJ/JSON_ARR value as the server does, in place."""
    case = value.WhichOneof("value")
    if case not in ("json_obj", "json_arr"):
        return
    compact = compact_json(getattr(value, case), dict if case == "json_obj" else list)
    if compact is None:
        value.ClearField(case)  # Gson reads "null": the value is LittleHorse's null
    else:
        setattr(value, case, compact)


def compact_values(message: _M) -> _M:
    """``compact_value`` every VariableValue anywhere inside ``message``, in place."""
    if isinstance(message, VariableValue):
        compact_value(message)
    for field, content in message.ListFields():
        if field.type != FieldDescriptor.TYPE_MESSAGE:
            continue
        if field.message_type.GetOptions().map_entry:
            value_field = field.message_type.fields_by_name["value"]
            if value_field.type == FieldDescriptor.TYPE_MESSAGE:
                for item in content.values():
                    compact_values(item)
        elif field.is_repeated:
            for item in content:
                compact_values(item)
        else:
            compact_values(content)
    return message
