"""The shared model-driven request validator (localcloud/validation.py), on a small
botocore service model built here with real ``botocore.model.ServiceModel``."""

from __future__ import annotations

from typing import Any

import pytest
from botocore.model import ServiceModel

from localcloud import validation
from localcloud.validation import Violation

_MODEL: dict[str, Any] = {
    "metadata": {"protocol": "rest-json", "apiVersion": "2024-01-01", "endpointPrefix": "t"},
    "operations": {
        "Put": {
            "name": "Put",
            "http": {"method": "POST", "requestUri": "/things/{name}"},
            "input": {"shape": "PutRequest"},
        },
        "Get": {
            "name": "Get",
            "http": {"method": "GET", "requestUri": "/things/{name}"},
            "input": {"shape": "GetRequest"},
        },
    },
    "shapes": {
        "PutRequest": {
            "type": "structure",
            "required": ["Name", "Kind"],
            "members": {
                "Name": {"shape": "Name", "location": "uri", "locationName": "name"},
                "Kind": {"shape": "Kind"},
                "Count": {"shape": "Count"},
                "Ratio": {"shape": "Ratio"},
                "Enabled": {"shape": "Flag"},
                "Blob": {"shape": "Blob"},
                "Tags": {"shape": "Tags"},
                "Labels": {"shape": "Labels"},
                "Token": {
                    "shape": "Name",
                    "location": "header",
                    "locationName": "X-Token",
                },
            },
        },
        "GetRequest": {
            "type": "structure",
            "required": ["Name"],
            "members": {
                "Name": {"shape": "Name", "location": "uri", "locationName": "name"},
                "MaxResults": {
                    "shape": "Count",
                    "location": "querystring",
                    "locationName": "maxResults",
                },
            },
        },
        "Name": {"type": "string", "min": 1, "max": 8, "pattern": "[a-z]+"},
        "Kind": {"type": "string", "enum": ["A", "B"]},
        "Count": {"type": "integer", "min": 1, "max": 100},
        "Ratio": {"type": "double", "min": 0, "max": 1},
        "Flag": {"type": "boolean"},
        "Blob": {"type": "blob"},
        "Tags": {"type": "list", "member": {"shape": "Tag"}, "min": 1, "max": 2},
        "Tag": {
            "type": "structure",
            "required": ["Key"],
            "members": {"Key": {"shape": "TagText"}, "Value": {"shape": "TagText"}},
        },
        "TagText": {"type": "string", "max": 5, "pattern": r"^([\p{L}\p{Z}\p{N}_.:/=+\-@]*)$"},
        "Labels": {"type": "map", "key": {"shape": "Name"}, "value": {"shape": "Name"}, "max": 2},
    },
}
MODEL = ServiceModel(_MODEL, service_name="t")
PUT = MODEL.operation_model("Put").input_shape
GET = MODEL.operation_model("Get").input_shape


def rules(found: list[Violation]) -> list[tuple[str, str, Any]]:
    return [(validation.aws_path(v.path), v.rule, v.bound) for v in found]


def test_valid_input_has_no_violations() -> None:
    """A request that meets every constraint yields nothing (no false rejections)."""
    value = {
        "Name": "abc",
        "Kind": "A",
        "Count": 100,
        "Ratio": 0.5,
        "Enabled": False,
        "Blob": "aGk=",
        "Tags": [{"Key": "ä b", "Value": ""}, {"Key": "k9_."}],
        "Labels": {"ab": "cd"},
    }
    assert validation.violations(PUT, value) == []


def test_every_rule_is_found_in_member_order_with_its_path() -> None:
    """Required, enum, ranges, types, base64, list and map sizes, null items, nested
    required members, \\p{..} patterns and map keys are each reported once, in member
    order, with the path AWS prints."""
    value = {
        "Kind": "C",
        "Count": 0,
        "Ratio": 1.5,
        "Enabled": "yes",
        "Blob": "not base64!",
        "Tags": [None, {"Value": "a#"}, {"Key": "toolong"}],
        "Labels": {"A": "x", "b": None, "c": "d"},
    }
    assert rules(validation.violations(PUT, value)) == [
        ("name", validation.REQUIRED, None),
        ("kind", validation.ENUM, ("A", "B")),
        ("count", validation.MIN_VALUE, 1),
        ("ratio", validation.MAX_VALUE, 1),
        ("enabled", validation.TYPE, "boolean"),
        ("blob", validation.BASE64, None),
        ("tags", validation.MAX_LENGTH, 2),
        ("tags.1.member", validation.NULL, "structure"),
        ("tags.2.member.key", validation.REQUIRED, None),
        ("tags.2.member.value", validation.PATTERN, _MODEL["shapes"]["TagText"]["pattern"]),
        ("tags.3.member.key", validation.MAX_LENGTH, 5),
        ("labels", validation.MAX_LENGTH, 2),
        ("labels.A.key", validation.PATTERN, "[a-z]+"),
        ("labels.b.value", validation.NULL, "string"),
    ]


@pytest.mark.parametrize(
    ("value", "kind"),
    [
        ({"Name": "a", "Kind": "A", "Count": True}, "integer"),
        ({"Name": "a", "Kind": "A", "Count": 1.5}, "integer"),
        ({"Name": "a", "Kind": "A", "Ratio": "0.5"}, "double"),
        ({"Name": "a", "Kind": "A", "Tags": {"Key": "k"}}, "list"),
        ({"Name": "a", "Kind": "A", "Labels": ["a"]}, "map"),
        ({"Name": 5, "Kind": "A"}, "string"),
    ],
)
def test_wrong_json_types_are_type_violations(value: dict[str, Any], kind: str) -> None:
    """A JSON value of the wrong type (booleans are not integers, floats not integers,
    strings not numbers) is one TYPE violation naming the shape's type, and its
    constraints are not checked further."""
    [found] = validation.violations(PUT, value)
    assert (found.rule, found.bound) == (validation.TYPE, kind)


def test_unicode_class_pattern_is_checked_per_character() -> None:
    """``\\p{L}``, ``\\p{Z}`` and ``\\p{N}`` accept letters, separators and numbers of any
    script; other symbols are refused; the class's quantifier bounds the length."""
    tag = validation.matcher(r"^([\p{L}\p{Z}\p{N}_.:/=+\-@]*)$")
    assert tag("Ünïcode 名前 ٣\u00a0-@=")
    assert not tag("a#b") and not tag("tab\t")
    bounded = validation.matcher(r"[\p{L}]{2,3}")
    assert [bounded(v) for v in ("a", "ab", "abc", "abcd")] == [False, True, True, False]


def test_unsupported_unicode_class_pattern_is_refused() -> None:
    """A ``\\p{..}`` outside one repeated character class, or next to a character range,
    is refused with ValueError instead of being matched wrongly."""
    with pytest.raises(ValueError, match="unsupported"):
        validation.matcher(r"\p{L}+[0-9]")
    with pytest.raises(ValueError, match="unsupported"):
        validation.matcher(r"[\p{L}a-z]*")


def test_dot_does_not_match_a_line_break() -> None:
    """Model patterns are Java patterns: ``.`` stops at a line break."""
    assert validation.matcher(".*")("one line")
    assert not validation.matcher(".*")("two\nlines")


def test_constraint_messages_use_aws_wording() -> None:
    """The AWS sentences quote the value (cut to the width), name the path and the rule;
    sizes of lists quote no value; null members read ``Value null``."""
    found = validation.violations(
        PUT, {"Kind": "C", "Count": 0, "Tags": [], "Labels": {"ab": "x" * 70}}
    )
    messages = [validation.constraint_message(v) for v in found]
    assert messages[:4] == [
        "Value null at 'name' failed to satisfy constraint: Member must not be null",
        "Value 'C' at 'kind' failed to satisfy constraint: Member must satisfy enum value set: "
        "[A, B]",
        "Value '0' at 'count' failed to satisfy constraint: "
        "Member must have value greater than or equal to 1",
        "Value at 'tags' failed to satisfy constraint: "
        "Member must have length greater than or equal to 1",
    ]
    assert messages[4] == (
        f"Value '{'x' * 61}...' at 'labels.ab.value' failed to satisfy constraint: "
        "Member must have length less than or equal to 8"
    )
    assert validation.summary(messages[:1]).startswith("1 validation error detected: Value null")
    assert validation.summary(messages).startswith("5 validation errors detected: ")


def test_rest_input_reads_each_member_where_the_model_binds_it() -> None:
    """URI, header and body members are gathered into one dict; absent ones are left out;
    a query integer is converted, and text that is no integer stays a string so it is
    reported as a type error."""
    none: dict[str, str] = {}
    headers = {"X-Token": "tok"}
    values = validation.rest_input(
        PUT, {"name": "abc"}, none.get, headers.get, lambda: {"Kind": "A", "Count": 3}
    )
    assert values == {"Name": "abc", "Kind": "A", "Count": 3, "Token": "tok"}

    def no_body() -> dict[str, Any]:
        raise AssertionError("an operation without body members must not read the body")

    query = {"maxResults": "7"}
    assert validation.rest_input(GET, {"name": "a"}, query.get, none.get, no_body) == {
        "Name": "a",
        "MaxResults": 7,
    }
    query["maxResults"] = "7x"
    values = validation.rest_input(GET, {"name": "a"}, query.get, none.get, no_body)
    assert rules(validation.violations(GET, values)) == [("maxResults", validation.TYPE, "integer")]


def test_service_models_come_from_localcloud_data_first() -> None:
    """Lookout for Vision (dropped from current botocore) is the world's own model with
    the seven emulated operations; other services are botocore's."""
    lookoutvision = validation.service_model("lookoutvision")
    assert len(lookoutvision.operation_names) == 7
    assert (validation.DATA_PATH / "lookoutvision" / "2020-11-20" / "service-2.json").is_file()
    assert "CreateDeployment" in validation.service_model("greengrassv2").operation_names
