"""iam/iot-policy-fleet.json against the fleet topics the agent uses (direct MQTT).

A small evaluator of AWS IoT Core policies (the subset the document uses): resources are
matched with ``*`` (any characters, ``/`` included) and ``?`` (one character), MQTT's
``+`` and ``#`` are plain characters there, ``${iot:Connection.Thing.ThingName}`` is the
connected thing, and an explicit Deny wins. The topics come from
``agent.coordination.FleetTopics``, so a change of the topic layout fails here until the
policy follows.
"""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from agent.config import FleetSettings
from agent.coordination import FleetTopics

POLICY = Path(__file__).resolve().parents[2] / "iam" / "iot-policy-fleet.json"
REGION, ACCOUNT, PROJECT = "eu-west-1", "123456789012", "widgets"
PLACEHOLDERS = {"${Region}": REGION, "${Account}": ACCOUNT, "${ProjectName}": PROJECT}
THING_VARIABLE = "${iot:Connection.Thing.ThingName}"
TOPICS = FleetTopics(FleetSettings().topic_prefix, PROJECT)
X86, JETSON = "x86-64-cpu", "jetson-xavier"


@cache
def _document() -> dict[str, Any]:
    text = POLICY.read_text()
    for placeholder, value in PLACEHOLDERS.items():
        text = text.replace(placeholder, value)
    loaded: dict[str, Any] = json.loads(text)
    return loaded


def _matches(pattern: str, resource: str) -> bool:
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, resource) is not None


def allows(action: str, resource: str, thing: str = "edge-a") -> bool:
    """Whether the policy lets a connection of ``thing`` do ``action`` on ``resource``."""
    verdicts = set()
    for statement in _document()["Statement"]:
        if action not in statement["Action"]:
            continue
        patterns = [p.replace(THING_VARIABLE, thing) for p in statement["Resource"]]
        if any(_matches(p, resource) for p in patterns):
            verdicts.add(statement["Effect"])
    return "Allow" in verdicts and "Deny" not in verdicts


def arn(kind: str, name: str) -> str:
    return f"arn:aws:iot:{REGION}:{ACCOUNT}:{kind}/{name}"


def test_the_document_has_only_the_documented_placeholders() -> None:
    """Besides the IoT policy variable for the thing, only ${Region}, ${Account} and
    ${ProjectName} are left to replace (as iam/README.md says)."""
    text = POLICY.read_text()
    assert set(re.findall(r"\$\{[^}]+\}", text)) == {*PLACEHOLDERS, THING_VARIABLE}
    assert _document()["Version"] == "2012-10-17"


def test_a_device_can_do_everything_it_does_with_announcements() -> None:
    """Connect as its thing; publish every kind of announcement for its platform (the
    failed one under its own name, every wave); subscribe to what FleetTopics says; and
    receive everything its board takes, other devices' failures included."""
    assert allows("iot:Connect", arn("client", "edge-a"))
    published = [
        TOPICS.released(), TOPICS.job(X86), TOPICS.ready(X86), TOPICS.failed(X86, "edge-a"),
        *(TOPICS.deployed(X86, wave) for wave in range(10)),
    ]
    for topic in published:
        assert allows("iot:Publish", arn("topic", topic)), topic
    for topic_filter in TOPICS.subscriptions(X86):
        assert allows("iot:Subscribe", arn("topicfilter", topic_filter)), topic_filter
    for topic in [*published, TOPICS.failed(X86, "edge-b")]:
        assert allows("iot:Receive", arn("topic", topic)), topic


@pytest.mark.parametrize(
    ("action", "resource"),
    [
        ("iot:Connect", arn("client", "edge-b")),
        ("iot:Publish", arn("topic", TOPICS.failed(X86, "edge-b"))),
        ("iot:Publish", arn("topic", FleetTopics("l4v-fleet", "gadgets").released())),
        ("iot:Publish", arn("topic", FleetTopics("other", PROJECT).released())),
        ("iot:Publish", arn("topic", f"{TOPICS.base}/{X86}/wave/10/deployed")),
        ("iot:Publish", arn("topic", f"{TOPICS.base}/{X86}/anything")),
        ("iot:Publish", arn("topic", "l4v-edge/edge-b/status")),
        ("iot:Subscribe", arn("topicfilter", f"{TOPICS.base}/#")),
        ("iot:Subscribe", arn("topicfilter", f"{TOPICS.base}/+/#")),
        ("iot:Subscribe", arn("topicfilter", f"{TOPICS.base}/+/ready")),
        ("iot:Subscribe", arn("topicfilter", "l4v-fleet/#")),
        ("iot:Subscribe", arn("topicfilter", FleetTopics("l4v-fleet", "gadgets").subscriptions(X86)[1])),
        ("iot:Receive", arn("topic", FleetTopics("l4v-fleet", "gadgets").ready(X86))),
    ],
)
def test_everything_else_is_refused(action: str, resource: str) -> None:
    """Another thing's client id or failed topic, another project or prefix, a wave
    beyond 9, a topic outside the layout, the agent's per-device topics, and any
    subscription that spans platforms or projects are not granted."""
    assert not allows(action, resource, thing="edge-a")


def test_another_platform_is_one_level_like_the_own() -> None:
    """The platform is detected at run time, so the policy cannot name it: any one
    platform is allowed (a Jetson device of the project announces for its own)."""
    assert allows("iot:Publish", arn("topic", TOPICS.ready(JETSON)))
    assert allows("iot:Subscribe", arn("topicfilter", TOPICS.subscriptions(JETSON)[1]))
