"""JSON Schema files for every message, generated from the pydantic models.

Outgoing messages are described as they are serialized (aliases, ``mode="serialization"``);
the command and the fleet announcements (``announcement-<kind>``, see
``agent.coordination``) as they are accepted (``mode="validation"``). The files in ``schemas/`` at the
repository root are produced by :func:`export_schemas` (``python -m agent schemas`` or
``python -m agent.reporting.schemas``), and a test keeps them equal to the models.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel

from agent.coordination import ANNOUNCEMENT_MODELS
from agent.reporting.events import ALL_SCHEMAS

#: Fleet announcements by schema name (``announcement-released``, ...).
ANNOUNCEMENT_SCHEMAS: dict[str, type[BaseModel]] = {
    f"announcement-{model.model_fields['kind'].default}": model for model in ANNOUNCEMENT_MODELS
}
#: Every message with a schema file: what the agent sends and receives.
MESSAGE_SCHEMAS: dict[str, type[BaseModel]] = {**ALL_SCHEMAS, **ANNOUNCEMENT_SCHEMAS}

#: The JSON Schema dialect pydantic generates.
DIALECT = "https://json-schema.org/draft/2020-12/schema"

#: Messages the agent receives; every other schema describes what it sends.
INCOMING = frozenset({"command", *ANNOUNCEMENT_SCHEMAS})


def schema_mode(name: str) -> Literal["validation", "serialization"]:
    return "validation" if name in INCOMING else "serialization"


def json_schema(name: str, model: type[BaseModel]) -> dict[str, Any]:
    """The JSON Schema of message ``name`` as a dict."""
    mode = schema_mode(name)
    schema = model.model_json_schema(by_alias=True, mode=mode)
    if mode == "serialization":
        _all_required(schema)
    if name in ANNOUNCEMENT_SCHEMAS:
        # ``kind`` has a default in the model but is the union's discriminator: a
        # received announcement without it is refused.
        schema["required"] = sorted({*schema.get("required", []), "kind"})
    return {"$schema": DIALECT, **schema}


def _all_required(schema: dict[str, Any]) -> None:
    """Mark every property of every object as required: outgoing messages are serialized
    without excluding defaults or None, so each field is always present (maybe null)."""
    for node in [schema, *schema.get("$defs", {}).values()]:
        properties = node.get("properties")
        if isinstance(properties, dict) and properties:
            node["required"] = list(properties)


def render_schema(name: str, model: type[BaseModel]) -> str:
    """The exact text of ``<name>.schema.json``: sorted keys, two-space indent, newline."""
    return json.dumps(json_schema(name, model), indent=2, sort_keys=True) + "\n"


def schema_filename(name: str) -> str:
    return f"{name}.schema.json"


def export_schemas(directory: Path) -> list[Path]:
    """Write ``<name>.schema.json`` for every message into ``directory``; returns the paths."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, model in sorted(MESSAGE_SCHEMAS.items()):
        path = directory / schema_filename(name)
        path.write_text(render_schema(name, model), encoding="utf-8")
        written.append(path)
    return written


if __name__ == "__main__":  # pragma: no cover - a convenience for maintainers
    for written_path in export_schemas(Path(sys.argv[1] if len(sys.argv) > 1 else "schemas")):
        print(written_path)
