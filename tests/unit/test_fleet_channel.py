"""FleetChannel: what the transport's thread hands it, and what it does with it."""

from __future__ import annotations

import threading

from structlog.testing import capture_logs

from agent.coordination import FleetTopics, Ready, Released
from agent.errors import AccessDeniedError
from agent.reporting.fleet_channel import REJECTION_LOG_INTERVAL, FleetChannel
from tests.support.fakes import FakeClock

TOPICS = FleetTopics("l4v-fleet", "widgets")
X86 = "x86-64-cpu"


def channel(clock: FakeClock | None = None) -> tuple[FleetChannel, threading.Event]:
    wakes = threading.Event()
    built = FleetChannel.for_device("l4v-fleet", "widgets", X86, clock=clock or FakeClock(), wake=wakes.set)
    return built, wakes


def ready(version: int, thing: str = "edge-a") -> bytes:
    return Ready(
        thing_name=thing, sent_at="", model_version=version, platform=X86,
        component_name="widgets.x86-64-cpu", component_version=f"{version}.0.0",
    ).to_json()


def rejection_logs(logs: list[dict[str, object]]) -> list[dict[str, object]]:
    return [entry for entry in logs if entry["event"] == "fleet announcement rejected"]


def test_subscriptions_are_the_projects_release_and_the_platforms_topics() -> None:
    """A device subscribes to its project's released topic and everything of its platform."""
    built, _ = channel()
    assert built.subscriptions() == ("l4v-fleet/widgets/released", "l4v-fleet/widgets/x86-64-cpu/#")


def test_the_loop_is_woken_only_when_the_news_change() -> None:
    """The first ready announcement wakes the loop; the same one again (a retained
    message re-delivered, another device repeating it) does not; a new version does."""
    built, wakes = channel()
    built.handle(TOPICS.ready(X86), ready(3))
    assert wakes.is_set()
    wakes.clear()
    built.handle(TOPICS.ready(X86), ready(3, thing="edge-b"))
    assert not wakes.is_set()
    built.handle(TOPICS.released(), Released(thing_name="edge-b", sent_at="", model_version=4).to_json())
    assert wakes.is_set()
    assert built.counts().accepted == 3


def test_rejections_are_logged_at_most_once_per_interval_with_the_reason() -> None:
    """Three bad messages within a minute make one warning (naming the field and rule);
    the next one after the interval logs again and says how many came since."""
    clock = FakeClock()
    built, wakes = channel(clock)
    with capture_logs() as logs:
        built.handle(TOPICS.ready(X86), b'{"kind":"ready"}')
        built.handle(TOPICS.ready(X86), b"[]")
        clock.advance(REJECTION_LOG_INTERVAL - 1)
        built.handle(TOPICS.ready(X86), b"nope")
    first = rejection_logs(logs)
    assert len(first) == 1
    assert str(first[0]["reason"]).startswith("ready.thingName: Field required")
    with capture_logs() as logs:
        clock.advance(1)
        built.handle(TOPICS.job(X86), ready(3))
    again = rejection_logs(logs)
    assert len(again) == 1
    assert again[0]["rejected_since_last_log"] == 3
    assert str(again[0]["reason"]).startswith("topic:")
    assert (built.counts().rejected, built.counts().accepted) == (4, 0)
    assert not wakes.is_set()


class BrokenClock(FakeClock):
    """A clock that fails when the board stamps news (a bug anywhere below the handler)."""

    def now(self) -> float:
        raise RuntimeError("clock broke")


def test_the_handler_never_raises_into_the_transport() -> None:
    """Whatever goes wrong while taking a message, the transport's thread gets no
    exception: it is logged and the next message is handled."""
    built, _ = channel(BrokenClock())
    with capture_logs() as logs:
        built.handle(TOPICS.ready(X86), ready(3))
        built.handle(TOPICS.ready(X86), b"\xff\xfe")
    assert [e["event"] for e in logs] == [
        "fleet announcement handler failed", "fleet announcement rejected",
    ]
    assert built.counts().rejected == 1


def test_a_refused_subscription_is_kept_until_one_succeeds() -> None:
    """A subscription the nucleus or broker refuses is reported (topic and reason)
    until a later connection subscribes to it; the other topic succeeding does not
    hide it."""
    built, _ = channel()
    released, platform = built.subscriptions()
    built.subscription_result(released, AccessDeniedError("subscribe denied by the nucleus"))
    built.subscription_result(platform, None)
    assert built.counts().subscription_error == "l4v-fleet/widgets/released: subscribe denied by the nucleus"
    built.subscription_result(released, None)
    assert built.counts().subscription_error is None
