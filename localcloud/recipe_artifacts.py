"""Checks of the ``Artifacts`` of a Greengrass recipe's manifests.

A component made by the agent itself (the SageMaker backend) carries the compiled model
as an artifact, so the world must refuse what Greengrass refuses: an artifact without
a ``URI``, a URI Greengrass cannot fetch (only ``s3://bucket/key`` and ``docker:``), an
``Unarchive`` other than ``NONE`` or ``ZIP`` (Greengrass cannot unpack a ``.tar.gz``),
and ``Permission`` values other than ``NONE``, ``OWNER`` or ``ALL``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from localcloud.device import recipe_get

UNARCHIVE = ("NONE", "ZIP")
PERMISSION = ("NONE", "OWNER", "ALL")
_URI = re.compile(r"s3://[^/]+/.+|docker:.+")


def artifact_errors(recipe: Mapping[str, Any]) -> list[dict[str, str]]:
    """One ``{name, message}`` per broken artifact field of every manifest."""
    errors: list[dict[str, str]] = []
    manifests = recipe_get(recipe, "Manifests")
    if not isinstance(manifests, list):
        return errors
    for m_index, manifest in enumerate(manifests):
        artifacts = recipe_get(manifest, "Artifacts")
        if artifacts is None:
            continue
        where = f"inlineRecipe.Manifests[{m_index}].Artifacts"
        if not isinstance(artifacts, list):
            errors.append({"name": where, "message": "must be a list of objects"})
            continue
        for a_index, artifact in enumerate(artifacts):
            path = f"{where}[{a_index}]"
            if not isinstance(artifact, Mapping):
                errors.append({"name": path, "message": "must be an object"})
                continue
            uri = recipe_get(artifact, "URI")
            if not isinstance(uri, str) or _URI.fullmatch(uri) is None:
                errors.append(
                    {"name": f"{path}.URI", "message": "must be s3://bucket/key or docker:image"}
                )
            unarchive = recipe_get(artifact, "Unarchive", "NONE")
            if unarchive not in UNARCHIVE:
                errors.append(
                    {
                        "name": f"{path}.Unarchive",
                        "message": f"must be one of {', '.join(UNARCHIVE)}",
                    }
                )
            permission = recipe_get(artifact, "Permission")
            if permission is not None:
                if not isinstance(permission, Mapping):
                    errors.append({"name": f"{path}.Permission", "message": "must be an object"})
                    continue
                for key in ("Read", "Execute"):
                    value = recipe_get(permission, key)
                    if value is not None and value not in PERMISSION:
                        errors.append(
                            {
                                "name": f"{path}.Permission.{key}",
                                "message": f"must be one of {', '.join(PERMISSION)}",
                            }
                        )
    return errors
