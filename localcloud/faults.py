"""Fault injection and the account-wide request-rate quota.

Rules are per (service, operation) (operation ``"*"`` matches all of a service) and are
checked by ``World.dispatch`` before the emulator sees the request, so boto3 observes
exactly what it would from AWS: the HTTP status and error code, after its own retries.
"""

from __future__ import annotations

import math
import random
import threading
import time
from collections import deque
from dataclasses import dataclass, field

from localcloud.clock import Clock
from localcloud.http import DropConnection, ServiceError

# What each injectable fault looks like on the wire.
FAULT_ERRORS = {
    "throttle": ("ThrottlingException", 429, "Rate exceeded"),
    "5xx": ("InternalServerException", 500, "Injected internal error"),
    "unavailable": ("ServiceUnavailableException", 503, "Injected service unavailable"),
}
FAULT_KINDS = (*FAULT_ERRORS, "latency", "drop")


@dataclass
class FaultRule:
    """Inject ``kind`` on matching calls: the next ``times`` calls, or with ``probability``."""

    service: str
    operation: str
    kind: str
    times: int | None = None
    probability: float | None = None
    latency_seconds: float = 0.0
    fired: int = 0

    def matches(self, service: str, operation: str) -> bool:
        return self.service == service and self.operation in ("*", operation)

    def exhausted(self) -> bool:
        return self.times is not None and self.fired >= self.times


#: How each service's model spells the quota members of ThrottlingException (None: its
#: model has no such shape, so the answer carries only the code and message).
_QUOTA_MEMBERS: dict[str, tuple[str, str] | None] = {
    "lookoutvision": ("QuotaCode", "ServiceCode"),
    "sagemaker": None,
}

#: The HTTP status of a throttle where it is not 429: JSON 1.1 services such as SageMaker
#: answer ThrottlingException with 400.
_THROTTLE_STATUS = {"sagemaker": 400}

#: Error codes that mean "slow down" (what the call log counts as throttled).
THROTTLING_CODES = frozenset({"ThrottlingException", "Throttling", "ThrottledException"})


def throttle_status(service: str) -> int:
    """The HTTP status ``service`` answers a throttle with."""
    return _THROTTLE_STATUS.get(service, 429)


@dataclass
class RateQuota:
    """At most ``rate`` requests in any ``window`` seconds of world time, per service,
    counted separately for each account and Region."""

    service: str
    rate: int
    window: float = 1.0
    stamps: dict[tuple[str, str], deque[float]] = field(default_factory=dict)


class FaultInjector:
    """Holds fault rules and quotas; ``check`` raises what the client should see."""

    def __init__(self, clock: Clock, seed: int | None = None) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._rules: list[FaultRule] = []
        self._quotas: dict[str, RateQuota] = {}
        self._random = random.Random(seed)

    def inject(
        self,
        service: str,
        operation: str,
        kind: str,
        *,
        times: int | None = None,
        probability: float | None = None,
        latency_seconds: float = 0.0,
    ) -> FaultRule:
        """Add a rule. Exactly one of ``times``/``probability`` may be given; neither = always."""
        if kind not in FAULT_KINDS:
            raise ValueError(f"kind must be one of {FAULT_KINDS}, got {kind!r}")
        if times is not None and probability is not None:
            raise ValueError("give times or probability, not both")
        if probability is not None and not 0.0 <= probability <= 1.0:
            raise ValueError("probability must be within [0, 1]")
        if times is not None and times < 1:
            raise ValueError("times must be >= 1")
        rule = FaultRule(service, operation, kind, times, probability, latency_seconds)
        with self._lock:
            self._rules.append(rule)
        return rule

    def set_quota(self, service: str, rate: int | None, window: float = 1.0) -> None:
        """Enforce a per-account (and per-Region) rate quota for ``service`` (``None``
        removes it)."""
        with self._lock:
            if rate is None:
                self._quotas.pop(service, None)
            else:
                self._quotas[service] = RateQuota(service, rate, window)

    def clear(self) -> None:
        with self._lock:
            self._rules.clear()
            self._quotas.clear()

    def check(
        self, service: str, operation: str, *, account: str = "", region: str = ""
    ) -> None:
        """Raise the injected ServiceError/DropConnection for this call, or return."""
        delay = 0.0
        failure: BaseException | None = None
        with self._lock:
            for rule in self._rules:
                if rule.exhausted() or not rule.matches(service, operation):
                    continue
                if rule.probability is not None and self._random.random() >= rule.probability:
                    continue
                rule.fired += 1
                if rule.kind == "latency":
                    delay += rule.latency_seconds
                    continue
                if rule.kind == "drop":
                    failure = DropConnection(f"{service}.{operation}")
                else:
                    code, status, message = FAULT_ERRORS[rule.kind]
                    if rule.kind == "throttle":
                        status = throttle_status(service)
                    failure = ServiceError(code, message, status)
                break
            self._rules = [r for r in self._rules if not r.exhausted()]
            if failure is None:
                failure = self._check_quota(service, account, region)
        if delay:
            time.sleep(delay)  # latency is real: it is what the client waits for
        if failure is not None:
            raise failure

    def _check_quota(self, service: str, account: str, region: str) -> ServiceError | None:
        quota = self._quotas.get(service)
        if quota is None:
            return None
        now = self._clock.now()
        stamps = quota.stamps.setdefault((account, region), deque())
        while stamps and stamps[0] <= now - quota.window:
            stamps.popleft()
        if len(stamps) >= quota.rate:
            wait = max(1, math.ceil(stamps[0] + quota.window - now))
            members = _QUOTA_MEMBERS.get(service, ("quotaCode", "serviceCode"))
            if members is None:
                return ServiceError(
                    "ThrottlingException", "Rate exceeded", throttle_status(service)
                )
            quota_member, service_member = members
            return ServiceError(
                "ThrottlingException",
                "Rate exceeded for account",
                throttle_status(service),
                headers={"Retry-After": str(wait)},  # RetryAfterSeconds in the models
                **{quota_member: "account-requests-per-second", service_member: service},
            )
        stamps.append(now)
        return None
