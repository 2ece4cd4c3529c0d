"""Request validation driven by a botocore service model, shared by every emulator.

:func:`violations` walks a botocore shape (structure, list, map, string, number, boolean,
blob, timestamp) and returns every constraint a decoded JSON value breaks: JSON types,
required members, null list items and map values, lengths, numeric ranges, full-match
patterns (including the model's ``\\p{..}`` Unicode classes) and enums. It only finds
violations; each emulator words them the way its service answers (AWS's own
``Value '..' at 'a.b' failed to satisfy constraint: ..`` sentences are
:func:`constraint_message`), so one walker serves services whose error bodies differ.

:func:`service_model` loads a model by service name: the project's own copy in
``localcloud/data`` first (Lookout for Vision, which current botocore no longer ships),
then botocore's bundled models.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import re
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: Models the project carries itself (``<service>/<api-version>/service-2.json``).
DATA_PATH = Path(__file__).resolve().parent / "data"


@functools.cache
def service_model(service: str) -> Any:
    """The ``botocore.model.ServiceModel`` of ``service`` (loaded once per process).

    ``localcloud/data`` is searched before botocore's own data directory.
    """
    from botocore.loaders import Loader
    from botocore.model import ServiceModel

    loader = Loader(extra_search_paths=[str(DATA_PATH)])
    return ServiceModel(loader.load_service_model(service, "service-2"), service_name=service)


# -- paths -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Member:
    """A structure member, by its model name (``S3OutputLocation``)."""

    name: str


@dataclass(frozen=True)
class Item:
    """A list item, by its 0-based index."""

    index: int


@dataclass(frozen=True)
class MapKey:
    """The key ``key`` of a map entry."""

    key: str


@dataclass(frozen=True)
class MapValue:
    """The value of the map entry ``key``."""

    key: str


Segment = Member | Item | MapKey | MapValue
FieldPath = tuple[Segment, ...]


def aws_path(path: FieldPath) -> str:
    """A path as AWS prints it in validation messages: lowerCamelCase members,
    ``tags.1.member`` for list items, ``tags.k.key`` / ``tags.k.value`` for map entries."""
    parts: list[str] = []
    for segment in path:
        if isinstance(segment, Member):
            parts.append(segment.name[:1].lower() + segment.name[1:])
        elif isinstance(segment, Item):
            parts.append(f"{segment.index + 1}.member")
        elif isinstance(segment, MapKey):
            parts.append(f"{segment.key}.key")
        else:
            parts.append(f"{segment.key}.value")
    return ".".join(parts)


# -- violations --------------------------------------------------------------------------------

#: Rules a value can break; ``Violation.bound`` holds the rule's parameter.
TYPE = "type"  # bound: the shape's type name (``structure``, ``integer``, ...)
REQUIRED = "required"  # a required member is absent or null; bound: None
NULL = "null"  # a list item or map value is null; bound: the item's type name
ENUM = "enum"  # bound: tuple of the allowed values
MIN_LENGTH = "min_length"  # strings, lists, maps; bound: the limit
MAX_LENGTH = "max_length"
MIN_VALUE = "min_value"  # numbers; bound: the limit
MAX_VALUE = "max_value"
PATTERN = "pattern"  # bound: the model's (Java) pattern
BASE64 = "base64"  # a blob that is not base64 text; bound: None


@dataclass(frozen=True)
class Violation:
    """One broken constraint: where, which rule, the offending value and the rule's bound."""

    path: FieldPath
    rule: str
    value: Any
    bound: Any


_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "structure": (dict,),
    "map": (dict,),
    "list": (list,),
    "string": (str,),
    "boolean": (bool,),
    "integer": (int,),
    "long": (int,),
    "double": (int, float),
    "float": (int, float),
    "blob": (str,),
    "timestamp": (int, float),  # JSON protocols send epoch seconds
}


def violations(shape: Any, value: Any, path: FieldPath = ()) -> list[Violation]:
    """Every way ``value`` (a decoded JSON value, not None) breaks ``shape``, in member order."""
    found: list[Violation] = []
    _walk(shape, value, path, found)
    return found


def _walk(shape: Any, value: Any, path: FieldPath, found: list[Violation]) -> None:
    kind = shape.type_name
    meta: Mapping[str, Any] = shape.metadata
    accepted = _JSON_TYPES.get(kind)
    if accepted is not None and (
        not isinstance(value, accepted) or (isinstance(value, bool) and bool not in accepted)
    ):
        found.append(Violation(path, TYPE, value, kind))
        return
    if kind == "structure":
        required = set(shape.required_members)
        for name, member in shape.members.items():
            item = value.get(name)
            if item is None:
                if name in required:
                    found.append(Violation((*path, Member(name)), REQUIRED, None, None))
                continue
            _walk(member, item, (*path, Member(name)), found)
    elif kind == "list":
        _sizes(len(value), meta, value, path, found, MIN_LENGTH, MAX_LENGTH)
        for index, item in enumerate(value):
            _child(shape.member, item, (*path, Item(index)), found)
    elif kind == "map":
        _sizes(len(value), meta, value, path, found, MIN_LENGTH, MAX_LENGTH)
        for key, item in value.items():
            _walk(shape.key, key, (*path, MapKey(key)), found)
            _child(shape.value, item, (*path, MapValue(key)), found)
    elif kind == "string":
        if shape.enum:
            if value not in shape.enum:
                found.append(Violation(path, ENUM, value, tuple(shape.enum)))
            return
        _sizes(len(value), meta, value, path, found, MIN_LENGTH, MAX_LENGTH)
        pattern = meta.get("pattern")
        if pattern is not None and not matcher(pattern)(value):
            found.append(Violation(path, PATTERN, value, pattern))
    elif kind in ("integer", "long", "double", "float"):
        _sizes(value, meta, value, path, found, MIN_VALUE, MAX_VALUE)
    elif kind == "blob":
        try:
            base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            found.append(Violation(path, BASE64, value, None))


def _child(shape: Any, value: Any, path: FieldPath, found: list[Violation]) -> None:
    if value is None:
        found.append(Violation(path, NULL, None, shape.type_name))
    else:
        _walk(shape, value, path, found)


def _sizes(
    size: float,
    meta: Mapping[str, Any],
    value: Any,
    path: FieldPath,
    found: list[Violation],
    low_rule: str,
    high_rule: str,
) -> None:
    if "min" in meta and size < meta["min"]:
        found.append(Violation(path, low_rule, value, meta["min"]))
    if "max" in meta and size > meta["max"]:
        found.append(Violation(path, high_rule, value, meta["max"]))


# -- patterns ----------------------------------------------------------------------------------

_CLASS_REPEATED = re.compile(r"\^?\(?\[(.*)\](\*|\+|\{(\d+),(\d+)\})\)?\$?")


@functools.cache
def matcher(pattern: str) -> Callable[[str], bool]:
    """A full-match test for a model pattern (Java syntax).

    Python's ``re`` has no ``\\p{..}`` classes. The models use them only inside one
    character class that is repeated (``^([\\p{L}\\p{Z}\\p{N}_.:/=+\\-@]*)$``), which is
    tested character by character against the Unicode categories; any other use of
    ``\\p{`` is refused (ValueError) rather than guessed.
    """
    if "\\p{" not in pattern:
        # Without DOTALL, as in Java: ``.`` does not match a line break.
        compiled = re.compile(pattern)
        return lambda value: compiled.fullmatch(value) is not None
    found = _CLASS_REPEATED.fullmatch(pattern)
    if found is None:
        raise ValueError(f"unsupported \\p{{..}} pattern in a service model: {pattern}")
    body, quantifier, low, high = found.groups()
    categories = set(re.findall(r"\\p\{(\w+)\}", body))
    rest = re.sub(r"\\p\{\w+\}", "", body)
    if re.search(r"[^\\]-[^\]]", rest):
        raise ValueError(f"unsupported character range next to \\p{{..}}: {pattern}")
    literals = set(rest.replace("\\", ""))
    if low is not None:
        low_n, high_n = int(low), int(high)
    else:
        low_n, high_n = (1 if quantifier == "+" else 0), None

    def matches(value: str) -> bool:
        if len(value) < low_n or (high_n is not None and len(value) > high_n):
            return False
        return all(
            ch in literals
            or unicodedata.category(ch) in categories
            or unicodedata.category(ch)[0] in categories
            for ch in value
        )

    return matches


# -- AWS's own wording -------------------------------------------------------------------------


def shown(value: Any, width: int = 64) -> str:
    """A value as a message quotes it: strings as they are, others as JSON; long ones cut."""
    text = value if isinstance(value, str) else json.dumps(value)
    return text if len(text) <= width else text[: width - 3] + "..."


_ARTICLE = {"integer": "an integer", "array": "an array"}


def constraint_message(violation: Violation, width: int = 64) -> str:
    """The sentence AWS's request validation answers for ``violation``
    (``Value 'x' at 'a.b' failed to satisfy constraint: Member must ...``).

    List and map sizes quote no value; null members read ``Value null``.
    """
    where = aws_path(violation.path)
    rule, bound, value = violation.rule, violation.bound, violation.value
    if rule in (REQUIRED, NULL):
        return f"Value null at '{where}' failed to satisfy constraint: Member must not be null"
    if rule == TYPE:
        noun = _ARTICLE.get(bound, f"a {bound}")
        return f"Value at '{where}' failed to satisfy constraint: Member must be {noun}"
    if rule == ENUM:
        text = f"Member must satisfy enum value set: [{', '.join(bound)}]"
    elif rule in (MIN_LENGTH, MIN_VALUE):
        what = "length" if rule == MIN_LENGTH else "value"
        text = f"Member must have {what} greater than or equal to {bound}"
    elif rule in (MAX_LENGTH, MAX_VALUE):
        what = "length" if rule == MAX_LENGTH else "value"
        text = f"Member must have {what} less than or equal to {bound}"
    elif rule == PATTERN:
        text = f"Member must satisfy regular expression pattern: {bound}"
    else:
        text = "Member must be valid base64"
    quoted = "" if isinstance(value, (list, dict)) else f" '{shown(value, width)}'"
    return f"Value{quoted} at '{where}' failed to satisfy constraint: {text}"


def summary(messages: list[str]) -> str:
    """``N validation error(s) detected: m1; m2`` as AWS joins constraint messages."""
    count = len(messages)
    noun = "error" if count == 1 else "errors"
    return f"{count} validation {noun} detected: " + "; ".join(messages)


# -- REST-JSON requests ------------------------------------------------------------------------

_INTEGER_TEXT = re.compile(r"[+-]?[0-9]{1,18}")


def rest_input(
    shape: Any,
    path_params: Mapping[str, str],
    query_value: Callable[[str], str | None],
    header_value: Callable[[str], str | None],
    read_body: Callable[[], Mapping[str, Any]],
) -> dict[str, Any]:
    """The members of a REST-JSON input ``shape`` as one dict, read from where the model
    binds them (URI, query string, header, JSON body), ready for :func:`violations`.

    Absent members are left out. A query integer that is not integer text stays a string,
    so :func:`violations` reports it as a type error. ``read_body`` is called only if the
    shape has body members.
    """
    values: dict[str, Any] = {}
    if shape is None:
        return values
    body: Mapping[str, Any] | None = None
    for name, member in shape.members.items():
        location = member.serialization.get("location")
        wire_name = member.serialization.get("name", name)
        raw: Any
        if location == "uri":
            raw = path_params.get(wire_name)
        elif location == "querystring":
            raw = query_value(wire_name)
            if raw is not None and member.type_name in ("integer", "long"):
                raw = int(raw) if _INTEGER_TEXT.fullmatch(raw) else raw
        elif location == "header":
            raw = header_value(wire_name)
        else:
            if body is None:
                body = read_body()
            raw = body.get(name)
        if raw is not None:
            values[name] = raw
    return values
