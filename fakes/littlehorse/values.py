"""VariableValue typing rules the server applies (``TypeDefinitionModel``, ``TypeCastingUtils``)."""

# mypy: disable-error-code="no-untyped-call"

from __future__ import annotations

import re
from typing import Any

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
