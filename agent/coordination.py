"""Fleet coordination: what one device learned, announced so the others need not ask.

Only one device needs to learn a fact from the cloud; the rest hear it over MQTT. Five
kinds of announcement, each retained on its own topic under ``{prefix}/{project}``::

    {prefix}/{project}/released                        version N is packageable
    {prefix}/{project}/{platform}/job                  job J for version N: STARTING (a claim) |
                                                       STARTED | RUNNING | FAILED
    {prefix}/{project}/{platform}/ready                component C@V for version N exists
    {prefix}/{project}/{platform}/wave/{k}/deployed    wave k's group deployment: CREATING (a
                                                       claim) | CREATED as D
    {prefix}/{project}/{platform}/failed/{thingName}   version N failed on this device
    {prefix}/{project}/{platform}/succeeded/{thingName}  a canary device runs version N

An announcement is a **hint, never an authority**. A hint can make a device skip a call
(someone else made it) or try one sooner; it never makes a device write to the cloud on
its word alone: every writing call is preceded by the reading call that verifies it
(``agent.decide``), and a device that skipped a call because of a hint makes it itself
when the promised outcome does not follow in time. A lying device can therefore waste a
bounded number of verified calls and delay a rollout, but cannot make anyone deploy a
component that does not exist. The wire format is validated here (pydantic; a bad message
is dropped with an error naming the field and the rule) and the topic must agree with
the body (platform, wave, sender).

:class:`FleetBoard` collects what was heard (thread-safe: the transport delivers on its
own thread); :meth:`FleetBoard.news` is the immutable snapshot the decision code reads.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator

from agent.reporting.events import utc_iso
from agent.text import clip

#: How many model versions of news a board keeps (the newest ones).
KEPT_VERSIONS = 4
#: Failed devices remembered per version (enough to decide any sensible halt threshold).
KEPT_FAILURES = 10_000

_THING = r"^[a-zA-Z0-9:_-]{1,128}$"
_PLATFORM = r"^[a-zA-Z0-9._-]{1,64}$"
_TOPIC_LEVEL = r"^[^/#+\x00]{1,128}$"


class AnnouncementKind(str, Enum):
    RELEASED = "released"
    JOB = "job"
    READY = "ready"
    DEPLOYED = "deployed"
    FAILED = "failed"
    SUCCEEDED = "succeeded"


class AnnouncementBase(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    schema_version: Literal[1] = Field(default=1, alias="schemaVersion")
    thing_name: str = Field(alias="thingName", pattern=_THING, description="The device that announces")
    sent_at: str = Field(alias="sentAt", max_length=40, description="ISO-8601 UTC; informative only")
    model_version: int = Field(alias="modelVersion", ge=1, le=999_999)

    def to_json(self) -> bytes:
        return self.model_dump_json(by_alias=True, exclude_none=True).encode()


class Released(AnnouncementBase):
    """A device's own check found ``modelVersion`` packageable."""

    kind: Literal["released"] = "released"


class JobNews(AnnouncementBase):
    """The packaging job for ``modelVersion`` on the topic's platform."""

    kind: Literal["job"] = "job"
    platform: str = Field(pattern=_PLATFORM)
    job_name: str = Field(alias="jobName", min_length=1, max_length=128)
    #: STARTING claims the job before the call, so the platform's other devices wait for
    #: its outcome instead of calling too when that first call is throttled or fails
    status: Literal["STARTING", "STARTED", "RUNNING", "FAILED"]
    reason: str | None = Field(default=None, max_length=512)


class Ready(AnnouncementBase):
    """The component version for ``modelVersion`` exists (the job SUCCEEDED)."""

    kind: Literal["ready"] = "ready"
    platform: str = Field(pattern=_PLATFORM)
    component_name: str = Field(alias="componentName", pattern=r"^[a-zA-Z0-9\-_.]{1,128}$")
    component_version: str = Field(alias="componentVersion", pattern=r"^[0-9]{1,6}\.[0-9]{1,6}\.[0-9]{1,6}$")


class Deployed(AnnouncementBase):
    """Wave ``wave``'s thing-group deployment holds the component for ``modelVersion``."""

    kind: Literal["deployed"] = "deployed"
    platform: str = Field(pattern=_PLATFORM)
    wave: int = Field(ge=0, le=9)
    target_arn: str = Field(alias="targetArn", pattern=r"^arn:[^:]+:iot:[^:]+:[0-9]{12}:thinggroup/[a-zA-Z0-9:_-]+$")
    #: CREATING claims the wave's deployment before the calls (no deploymentId yet)
    status: Literal["CREATING", "CREATED"] = "CREATED"
    deployment_id: str | None = Field(default=None, alias="deploymentId", min_length=1, max_length=128)

    @model_validator(mode="after")
    def _created_has_an_id(self) -> Deployed:
        if (self.status == "CREATED") != (self.deployment_id is not None):
            raise ValueError("deploymentId is required with status CREATED and absent with CREATING")
        return self


class Failed(AnnouncementBase):
    """``modelVersion`` failed to deploy on the sender (canary halts count these)."""

    kind: Literal["failed"] = "failed"
    platform: str = Field(pattern=_PLATFORM)
    component_version: str | None = Field(default=None, alias="componentVersion", max_length=64)
    reason: str | None = Field(default=None, max_length=512)


class Succeeded(AnnouncementBase):
    """A canary-wave device runs ``modelVersion`` (the share of failures in the canary
    waves is counted against these)."""

    kind: Literal["succeeded"] = "succeeded"
    platform: str = Field(pattern=_PLATFORM)
    wave: int = Field(ge=0, le=9)
    component_version: str | None = Field(default=None, alias="componentVersion", max_length=64)


AnyAnnouncement = Released | JobNews | Ready | Deployed | Failed | Succeeded
Announcement = Annotated[AnyAnnouncement, Field(discriminator="kind")]
_ANNOUNCEMENT: TypeAdapter[AnyAnnouncement] = TypeAdapter(Announcement)
#: Every announcement model (``python -m agent schemas`` exports one JSON Schema each).
ANNOUNCEMENT_MODELS: tuple[type[AnnouncementBase], ...] = (Released, JobNews, Ready, Deployed, Failed, Succeeded)


class HintRejected(ValueError):
    """An announcement that is not valid (the message names the field and the rule)."""


def stamp(epoch: float) -> str:
    """``sentAt`` for an announcement made at ``epoch``."""
    return utc_iso(epoch)


@dataclass(frozen=True)
class FleetTopics:
    """The announcement topics of one project under ``prefix``."""

    prefix: str
    project: str

    @property
    def base(self) -> str:
        return f"{self.prefix}/{self.project}"

    def released(self) -> str:
        return f"{self.base}/released"

    def job(self, platform: str) -> str:
        return f"{self.base}/{platform}/job"

    def ready(self, platform: str) -> str:
        return f"{self.base}/{platform}/ready"

    def deployed(self, platform: str, wave: int) -> str:
        return f"{self.base}/{platform}/wave/{wave}/deployed"

    def failed(self, platform: str, thing_name: str) -> str:
        return f"{self.base}/{platform}/failed/{thing_name}"

    def succeeded(self, platform: str, thing_name: str) -> str:
        return f"{self.base}/{platform}/succeeded/{thing_name}"

    def subscriptions(self, platform: str) -> tuple[str, ...]:
        """What a device of ``platform`` subscribes to."""
        return (self.released(), f"{self.base}/{platform}/#")

    def topic_of(self, message: AnnouncementBase) -> str:
        """Where ``message`` is published."""
        if isinstance(message, Released):
            return self.released()
        if isinstance(message, JobNews):
            return self.job(message.platform)
        if isinstance(message, Ready):
            return self.ready(message.platform)
        if isinstance(message, Deployed):
            return self.deployed(message.platform, message.wave)
        if isinstance(message, Failed):
            return self.failed(message.platform, message.thing_name)
        if isinstance(message, Succeeded):
            return self.succeeded(message.platform, message.thing_name)
        raise TypeError(f"not an announcement: {type(message).__name__}")

    def parse(self, topic: str, payload: bytes) -> AnyAnnouncement:
        """The announcement on ``topic``; :class:`HintRejected` naming the field and the
        rule when the payload is invalid or does not belong on ``topic``."""
        if len(payload) > 4096:
            raise HintRejected(f"payload: at most 4096 bytes, got {len(payload)}")
        try:
            message = _ANNOUNCEMENT.validate_json(payload)
        except ValidationError as exc:
            problem = exc.errors()[0]
            where = ".".join(str(p) for p in problem["loc"]) or "payload"
            raise HintRejected(f"{where}: {clip(problem['msg'], 200)}") from exc
        expected = self.topic_of(message)
        if topic != expected:
            raise HintRejected(f"topic: a {message.kind} announcement from {message.thing_name} "
                               f"belongs on {clip(expected, 200)}, not {clip(topic, 200)}")
        return message


# -- what a device heard -------------------------------------------------------------------
@dataclass(frozen=True)
class HeardJob:
    job_name: str
    status: str
    reason: str | None
    heard_at: float
    #: the device that announced it (a device does not defer to its own news)
    sender: str = ""


@dataclass(frozen=True)
class HeardReady:
    component_name: str
    component_version: str
    heard_at: float


@dataclass(frozen=True)
class HeardDeployment:
    target_arn: str
    #: None while only claimed (status CREATING)
    deployment_id: str | None
    heard_at: float
    sender: str = ""


@dataclass(frozen=True)
class FleetNews:
    """What the fleet announced, as the decision code reads it (one device's platform).

    Times are when this device heard the news (its own clock), never the sender's claim.
    """

    released: int | None = None
    released_heard_at: float | None = None
    jobs: Mapping[int, HeardJob] = field(default_factory=dict)
    ready: Mapping[int, HeardReady] = field(default_factory=dict)
    deployed: Mapping[tuple[int, int], HeardDeployment] = field(default_factory=dict)
    failures: Mapping[int, frozenset[str]] = field(default_factory=dict)
    #: canary devices that announced they run a version
    successes: Mapping[int, frozenset[str]] = field(default_factory=dict)

    def failed_count(self, model_version: int) -> int:
        return len(self.failures.get(model_version, ()))

    def succeeded_count(self, model_version: int) -> int:
        return len(self.successes.get(model_version, ()))


class FleetBoard:
    """Collects announcements for one device (``platform``) and answers :meth:`news`.

    ``clock`` gives the local time news is stamped with. Messages for another platform or
    project are refused by topic. Older versions than the newest ``KEPT_VERSIONS`` are
    forgotten, so a flood of made-up versions cannot grow memory.
    """

    def __init__(self, topics: FleetTopics, platform: str, now: Any) -> None:
        self.topics = topics
        self.platform = platform
        self._now = now
        self._lock = threading.Lock()
        self._news = FleetNews()
        #: announcements refused, and the last reason (health reports them)
        self.rejected = 0
        self.last_rejection: str | None = None
        self.accepted = 0

    def receive(self, topic: str, payload: bytes) -> bool:
        """Take one message from the transport; False (and counted) when refused."""
        try:
            message = self.topics.parse(topic, payload)
            if getattr(message, "platform", self.platform) != self.platform:
                raise HintRejected(f"platform: {message.platform!r} is not this device's {self.platform!r}")  # type: ignore[union-attr]
        except HintRejected as rejected:
            with self._lock:
                self.rejected += 1
                self.last_rejection = str(rejected)
            return False
        self.add(message)
        return True

    def add(self, message: AnnouncementBase) -> None:
        """Record ``message`` (already validated)."""
        now = float(self._now())
        with self._lock:
            self.accepted += 1
            self._news = _with(self._news, message, now)

    def news(self) -> FleetNews:
        with self._lock:
            return self._news


def _with(news: FleetNews, message: AnnouncementBase, now: float) -> FleetNews:
    version = message.model_version
    if isinstance(message, Released):
        if news.released is not None and version <= news.released:
            return news
        return _trim(replace(news, released=version, released_heard_at=now))
    jobs, ready, deployed = dict(news.jobs), dict(news.ready), dict(news.deployed)
    failures, successes = dict(news.failures), dict(news.successes)
    if isinstance(message, JobNews):
        known = jobs.get(version)
        # A claim never hides what is known of the same job (a late claimer's race).
        if not (message.status == "STARTING" and known is not None and known.job_name == message.job_name
                and known.status != "STARTING"):
            jobs[version] = HeardJob(message.job_name, message.status, message.reason, now, message.thing_name)
    elif isinstance(message, Ready):
        if version not in ready:
            ready[version] = HeardReady(message.component_name, message.component_version, now)
    elif isinstance(message, Deployed):
        key = (version, message.wave)
        known_deployment = deployed.get(key)
        # The first deployment announced created stays; a claim only refreshes a claim.
        if known_deployment is None or known_deployment.deployment_id is None:
            deployed[key] = HeardDeployment(message.target_arn, message.deployment_id, now, message.thing_name)
    elif isinstance(message, Failed | Succeeded):
        outcomes = failures if isinstance(message, Failed) else successes
        things = outcomes.get(version, frozenset())
        if len(things) < KEPT_FAILURES and message.thing_name not in things:
            outcomes[version] = things | {message.thing_name}
    return _trim(FleetNews(news.released, news.released_heard_at, jobs, ready, deployed, failures, successes))


def _trim(news: FleetNews) -> FleetNews:
    versions = (
        set(news.jobs) | set(news.ready) | {v for v, _ in news.deployed} | set(news.failures)
        | set(news.successes)
    )
    if len(versions) <= KEPT_VERSIONS:
        return news
    keep = set(sorted(versions)[-KEPT_VERSIONS:])
    return FleetNews(
        news.released,
        news.released_heard_at,
        {v: j for v, j in news.jobs.items() if v in keep},
        {v: r for v, r in news.ready.items() if v in keep},
        {k: d for k, d in news.deployed.items() if k[0] in keep},
        {v: f for v, f in news.failures.items() if v in keep},
        {v: f for v, f in news.successes.items() if v in keep},
    )
