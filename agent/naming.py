"""Name templates: only the documented placeholders, and names that always fit the API.

A template is literal text with placeholders (``{project}``, ``{platform}``,
``{version}``, ``{attempt}``). It is parsed when the configuration is validated and
rendered by plain substitution: ``str.format`` is never called, so attribute access
(``{project.__class__}``), indexing, conversions and format specs cannot run; they are
rejected at start instead.

Each template has its own rule (which placeholders it may and must hold, which literal
characters the API allows there). Rendering then fits the result to the API's pattern
and length, so every allowed project name (1-255 characters), model version
(1-999999) and platform key renders to a name the service accepts.
"""

from __future__ import annotations

import hashlib
import re
import string
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from agent.text import clip

PROJECT, PLATFORM, VERSION, ATTEMPT = "project", "platform", "version", "attempt"
PLACEHOLDERS = (PROJECT, PLATFORM, VERSION, ATTEMPT)
#: The canary wave (0 first) in a fleet's thing-group names.
WAVE = "wave"
#: Largest model version a component version part can hold (``[0-9]{1,6}``).
MAX_MODEL_VERSION = 999_999
#: A piece of a parsed template: literal text, or the name of a placeholder.
Piece = tuple[str, str | None]


@dataclass(frozen=True)
class TemplateRule:
    """What one template setting may contain and what its result must satisfy."""

    setting: str
    allowed: tuple[str, ...]
    required: tuple[str, ...]
    #: Characters literal text may hold (a regex character-class body).
    literal_chars: str
    #: Characters of the rendered name (others become ``-``) and its maximum length;
    #: ``limit`` 0 means the name is built exactly (no fitting).
    name_chars: str
    limit: int
    #: Why the required placeholders are required (shown in the error).
    why: str = ""
    #: Further rules on the parsed template (raise ValueError).
    shape: Callable[[str, list[Piece]], None] | None = None


_VERSION_PART = re.compile(r"0|[1-9][0-9]{0,5}")


def _version_shape(_template: str, pieces: list[Piece]) -> None:
    """MAJOR.MINOR.PATCH where each part is ``{version}`` or a number of 1-6 digits."""
    parts: list[list[Piece]] = [[]]
    for literal, name in pieces:
        if name is not None:
            parts[-1].append(("", name))
            continue
        for index, chunk in enumerate(literal.split(".")):
            if index:
                parts.append([])
            if chunk:
                parts[-1].append((chunk, None))
    rule = "must be MAJOR.MINOR.PATCH, each {version} or a number 0-999999 without leading zeros"
    if len(parts) != 3:
        raise ValueError(rule)
    for part in parts:
        only_version = part == [("", VERSION)]
        only_number = len(part) == 1 and part[0][1] is None and _VERSION_PART.fullmatch(part[0][0])
        if not (only_version or only_number):
            raise ValueError(rule)
    if sum(part == [("", VERSION)] for part in parts) != 1:
        raise ValueError("must contain {version} exactly once")


def _prefix_shape(template: str, _pieces: list[Piece]) -> None:
    if template.startswith("/"):
        raise ValueError("must not start with '/'")


COMPONENT_NAME = TemplateRule(
    setting="componentNameTemplate",
    allowed=(PROJECT, PLATFORM),
    required=(PLATFORM,),
    literal_chars=r"a-zA-Z0-9_.\-",
    name_chars=r"a-zA-Z0-9_.\-",
    limit=128,
    why="a component version is built for one platform, and the deployment holds one "
    "entry per component name",
)
COMPONENT_VERSION = TemplateRule(
    setting="componentVersionTemplate",
    allowed=(VERSION,),
    required=(VERSION,),
    literal_chars=r"0-9.",
    name_chars=r"0-9.",
    limit=0,
    shape=_version_shape,
)
JOB_NAME = TemplateRule(
    setting="jobNameTemplate",
    allowed=PLACEHOLDERS,
    required=(PLATFORM, VERSION, ATTEMPT),
    literal_chars=r"a-zA-Z0-9\-",
    name_chars=r"a-zA-Z0-9\-",
    limit=64,
    why="each platform, version and attempt is its own packaging job",
)
S3_PREFIX = TemplateRule(
    setting="s3Prefix",
    allowed=PLACEHOLDERS,
    required=(),
    literal_chars=r"a-zA-Z0-9!_.*'()/\-",
    name_chars=r"a-zA-Z0-9!_.*'()/\-",
    limit=1024,
    shape=_prefix_shape,
)
THING_GROUP_NAME = TemplateRule(
    setting="fleet.groupNameTemplate",
    allowed=(PROJECT, PLATFORM, WAVE),
    required=(PLATFORM,),
    literal_chars=r"a-zA-Z0-9:_\-",
    name_chars=r"a-zA-Z0-9:_\-",
    # Exact: the operator creates the groups, so a fitted (shortened) name would miss them.
    limit=0,
    why="a thing group's deployment reaches every device in it, so a group holds one platform",
)


def parse(rule: TemplateRule, template: str) -> list[Piece]:
    """Split ``template`` into literal text and placeholders, enforcing ``rule``.

    Raises ValueError naming the rule; the message quotes at most a short excerpt.
    """
    allowed = " ".join(f"{{{name}}}" for name in rule.allowed)
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ValueError(f"braces do not match ({exc}); placeholders are {allowed}") from exc
    pieces: list[Piece] = []
    for literal, field, spec, conversion in parsed:
        bad_literal = re.search(f"[^{rule.literal_chars}]", literal)
        if bad_literal:
            raise ValueError(
                f"character {bad_literal.group()!r} is not allowed here "
                f"(literal text may use [{rule.literal_chars.replace(chr(92), '')}])"
            )
        if literal:
            pieces.append((literal, None))
        if field is None:
            continue
        if field not in rule.allowed or spec or conversion:
            written = clip("{" + field + (f"!{conversion}" if conversion else "")
                           + (f":{spec}" if spec else "") + "}", 60)
            raise ValueError(f"{written} is not a placeholder here; use only {allowed}")
        pieces.append(("", field))
    used = {name for _, name in pieces if name}
    missing = [name for name in rule.required if name not in used]
    if missing:
        need = " and ".join(f"{{{name}}}" for name in missing)
        raise ValueError(f"must contain {need}" + (f" ({rule.why})" if rule.why else ""))
    if rule.shape is not None:
        rule.shape(template, pieces)
    return pieces

def render(rule: TemplateRule, template: str, values: Mapping[str, str]) -> str:
    """The name ``template`` gives for ``values``, fitted to ``rule``'s characters and length."""
    name = "".join(values[field] if field else literal for literal, field in parse(rule, template))
    if rule.limit == 0:
        return name
    return fit(name, rule.name_chars, rule.limit)


def fit(name: str, allowed: str, limit: int) -> str:
    """Make ``name`` use only ``[allowed]`` (others become ``-``) and at most ``limit``
    characters. A shortened name ends in 8 hex digits of the full name's SHA-256, so
    distinct long names stay distinct and every device computes the same one."""
    cleaned = re.sub(f"[^{allowed}]", "-", name)
    if len(cleaned) <= limit:
        return cleaned
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{cleaned[: limit - 9]}-{digest}"
