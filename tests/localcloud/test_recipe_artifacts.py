"""Greengrass refuses recipes whose artifacts it could not fetch or unpack.

The SageMaker backend makes its model components itself, with Neo's ``.tar.gz`` as the
artifact; these tests pin that the world refuses what Greengrass refuses, through the
real ``greengrassv2`` client.
"""

from __future__ import annotations

import json
from typing import Any

import botocore.session
import pytest
from botocore.exceptions import ClientError

from localcloud.transport import world_client
from localcloud.world import World

SESSION = botocore.session.get_session()


def recipe_with(artifact: Any) -> bytes:
    return json.dumps(
        {
            "RecipeFormatVersion": "2020-01-25",
            "ComponentName": "casting-defects.rasp4b",
            "ComponentVersion": "3.0.0",
            "Manifests": [
                {
                    "Platform": {"os": "linux", "architecture": "arm"},
                    "Artifacts": [artifact],
                    "Lifecycle": {"Install": "tar -xzf {artifacts:path}/model-rasp4b.tar.gz"},
                }
            ],
        }
    ).encode()


@pytest.mark.parametrize(
    ("artifact", "field"),
    [
        pytest.param(
            {"URI": "s3://b/m.tar.gz", "Unarchive": "TAR"}, "Unarchive", id="unarchive-tar"
        ),
        pytest.param(
            {"URI": "s3://b/m.tar.gz", "Unarchive": "GZIP"}, "Unarchive", id="unarchive-gzip"
        ),
        pytest.param({"Unarchive": "NONE"}, "URI", id="no-uri"),
        pytest.param({"URI": "https://b.s3.amazonaws.com/m.tar.gz"}, "URI", id="https-uri"),
        pytest.param({"URI": "s3://bucket-only"}, "URI", id="no-key"),
        pytest.param(
            {"URI": "s3://b/m", "Permission": {"Read": "EVERYONE"}},
            "Permission.Read",
            id="bad-read",
        ),
        pytest.param(
            {"URI": "s3://b/m", "Permission": "ALL"}, "Permission", id="permission-string"
        ),
        pytest.param("s3://b/m", "Artifacts[0]", id="artifact-string"),
    ],
)
def test_unfetchable_or_unpackable_artifacts_are_refused(
    world: World, artifact: Any, field: str
) -> None:
    """An artifact without a fetchable URI, with an Unarchive Greengrass lacks (it
    unpacks ZIP only) or bad permissions is a ValidationException naming the field;
    nothing is registered."""
    gg = world_client(world, "greengrassv2", botocore_session=SESSION)
    with pytest.raises(ClientError) as caught:
        gg.create_component_version(inlineRecipe=recipe_with(artifact))
    error = caught.value.response
    assert error["Error"]["Code"] == "ValidationException"
    assert any(f["name"].endswith(field) for f in error["fields"]), error["fields"]
    assert not world.greengrass.component_version_exists("casting-defects.rasp4b", "3.0.0")


@pytest.mark.parametrize(
    "artifact",
    [
        {"URI": "s3://neo-output/neo/model-rasp4b.tar.gz"},
        {"Uri": "s3://neo-output/neo/model-rasp4b.tar.gz", "Unarchive": "NONE"},
        {"URI": "s3://l4v-packages/x/model.zip", "Unarchive": "ZIP"},
        {"URI": "s3://b/m", "Permission": {"Read": "OWNER", "Execute": "NONE"}},
        {"URI": "docker:123456789012.dkr.ecr.us-east-1.amazonaws.com/model:1"},
    ],
)
def test_fetchable_artifacts_are_accepted(world: World, artifact: dict[str, Any]) -> None:
    """S3 and Docker artifacts with NONE/ZIP unarchiving and valid permissions register."""
    gg = world_client(world, "greengrassv2", botocore_session=SESSION)
    gg.create_component_version(inlineRecipe=recipe_with(artifact))
    assert world.greengrass.component_version_exists("casting-defects.rasp4b", "3.0.0")
