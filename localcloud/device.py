"""A simulated Greengrass V2 core device: the deployment applier behind the emulator.

A :class:`CoreDevice` receives deployments from every target it belongs to (its own
thing and its thing groups), queues them, and applies them one at a time on the world
clock, inside :meth:`CoreDevice.advance` (called from ``GreengrassEmulator.tick``):

1. *start* (at the time the deployment reaches the head of the queue): combine the
   latest applied deployment of every other target with the incoming one, resolve the
   root components and their dependencies (transitively) against the component
   registry, and show brand-new components as ``NEW``;
2. *notify* (deployments whose ``componentUpdatePolicy`` action is NOTIFY_COMPONENTS,
   the default): send a pre-update event to every component that subscribed to
   component updates and wait until all answered (DeferComponentUpdate) or the policy's
   ``timeoutInSeconds`` passed on the world clock; an answer with ``recheckAfterMs`` > 0
   defers the update that long, then a new round of events goes out. With
   SKIP_NOTIFY_COMPONENTS, or nobody subscribed, the install starts at once;
3. *complete* (``install_seconds`` after the install started): install what changed (a failure injected
   with ``fail_install`` makes the deployment FAILED; ROLLBACK restores the previous
   set, DO_NOTHING leaves the component BROKEN), walk new components through
   INSTALLED -> STARTING -> RUNNING (or FINISHED when the recipe has no Run/Startup),
   remove components no target asks for any more, apply configuration updates and
   tell the configuration listeners. A notified deployment then sends a post-update
   event, whether it succeeded, failed or was rolled back (and when it is canceled or
   times out after the notice): it says the update ran, not that it worked. Every
   post-update also goes to ``GreengrassEmulator.on_post_update`` (fleets without a
   nucleus).

It also implements :class:`localcloud.componenthost.ComponentHost` for the nucleus IPC
server. Everything here runs under the world lock (the emulator takes it).
"""

from __future__ import annotations

import copy
import re
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from localcloud.componenthost import (
    LIFECYCLE_STATES,
    ComponentInfo,
    ConfigListener,
    UpdatePolicyNotifier,
)

if TYPE_CHECKING:
    from localcloud.greengrass import ComponentVersion, Deployment, GreengrassEmulator

NUCLEUS_NAME = "aws.greengrass.Nucleus"
#: The one nucleus version of the world: the public component every core device runs,
#: and the ``GGC_VERSION`` the simulated nucleus gives components.
NUCLEUS_VERSION = "2.14.3"
#: States a component may report over IPC UpdateState.
REPORTABLE_STATES = ("RUNNING", "ERRORED")

# -- semantic versions and npm-style requirements ---------------------------------------

_VERSION = re.compile(
    r"^v?(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-([0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?(?:\+([0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?$"
)
_PARTIAL = re.compile(r"^v?(\d+|[xX*])(?:\.(\d+|[xX*]))?(?:\.(\d+|[xX*]))?(?:-([0-9A-Za-z.-]+))?$")
_OPERATORS = ("<=", ">=", "<", ">", "=", "^", "~")

VersionKey = tuple[int, int, int, tuple[Any, ...]]


def parse_version(text: str) -> VersionKey:
    """Sort key of a semantic version (``1.2.3``, ``1.2.3-rc.1``); ValueError if not one."""
    found = _VERSION.match(text.strip()) if isinstance(text, str) else None
    if found is None:
        raise ValueError(f"{text!r} is not a semantic version (major.minor.patch)")
    major, minor, patch, pre, _build = found.groups()
    return int(major), int(minor), int(patch), _pre_key(pre)


def is_version(text: str) -> bool:
    try:
        parse_version(text)
    except ValueError:
        return False
    return True


def _pre_key(pre: str | None) -> tuple[Any, ...]:
    # A release sorts after all its pre-releases; numeric identifiers before alphanumeric.
    if not pre:
        return (1,)
    parts = tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in pre.split("."))
    return (0, parts)


Comparator = tuple[str, VersionKey]


def parse_requirement(requirement: str) -> list[list[Comparator]]:
    """Parse an npm-style version requirement (``>=1.0.0 <2.0.0``, ``^1.2``, ``1.x || 2.1.0``).

    Returns alternatives (OR) of comparator sets (AND). Raises ValueError.
    """
    if not isinstance(requirement, str):
        raise ValueError("a version requirement must be a string")
    alternatives: list[list[Comparator]] = []
    for alternative in requirement.split("||"):
        text = alternative.strip()
        hyphen = re.fullmatch(r"(\S+)\s+-\s+(\S+)", text)
        if hyphen:
            low = _expand("", hyphen.group(1))
            high = _expand("<=", hyphen.group(2))
            alternatives.append([c for c in low if c[0].startswith(">")] + high)
            continue
        tokens = re.findall(r"(<=|>=|<|>|=|\^|~)?\s*([^\s<>=^~]+)", text)
        if text and "".join(op + ver for op, ver in tokens) != re.sub(r"\s+", "", text):
            raise ValueError(f"cannot parse version requirement {requirement!r}")
        comparators: list[Comparator] = []
        for operator, version in tokens:
            comparators.extend(_expand(operator, version))
        alternatives.append(comparators)
    return alternatives


def _expand(operator: str, text: str) -> list[Comparator]:
    found = _PARTIAL.match(text)
    if found is None:
        raise ValueError(f"{text!r} is not a version")
    raw = [found.group(1), found.group(2), found.group(3)]
    pre = found.group(4)
    numbers: list[int] = []
    for part in raw:
        if part is None or part in ("x", "X", "*"):
            break
        numbers.append(int(part))
    wild = len(numbers)  # how many leading parts are given
    full = (*numbers, *([0] * (3 - wild)))

    def key(major: int, minor: int, patch: int, prerelease: str | None = None) -> VersionKey:
        return major, minor, patch, _pre_key(prerelease)

    low = key(full[0], full[1], full[2], pre if wild == 3 else None)
    if wild == 0:
        return [] if operator not in ("<", ">") else [(operator, key(0, 0, 0))]
    if wild == 1:
        bump = key(full[0] + 1, 0, 0, "0")
    elif wild == 2:
        bump = key(full[0], full[1] + 1, 0, "0")
    else:
        bump = key(full[0], full[1], full[2] + 1, "0")
    if operator == "^":
        if full[0] > 0 or wild == 1:
            upper = key(full[0] + 1, 0, 0, "0")
        elif full[1] > 0 or wild == 2:
            upper = key(0, full[1] + 1, 0, "0")
        else:
            upper = key(0, 0, full[2] + 1, "0")
        return [(">=", low), ("<", upper)]
    if operator == "~":
        upper = key(full[0] + 1, 0, 0, "0") if wild == 1 else key(full[0], full[1] + 1, 0, "0")
        return [(">=", low), ("<", upper)]
    if wild == 3:
        return [(operator or "=", low)]
    # partial versions: 1.2 means any 1.2.x
    if operator in ("", "="):
        return [(">=", low), ("<", bump)]
    if operator == ">":
        return [(">=", bump)]
    if operator == "<=":
        return [("<", bump)]
    return [(operator, low)]


def _compare(version: VersionKey, operator: str, bound: VersionKey) -> bool:
    if operator == "=":
        return version[:3] == bound[:3] and version[3] == bound[3]
    if operator == ">=":
        return version >= bound
    if operator == ">":
        return version > bound
    if operator == "<=":
        return version <= bound
    return version < bound


def satisfies(version: str, requirement: str) -> bool:
    """Whether ``version`` meets an npm-style ``requirement`` (False if either is invalid)."""
    try:
        key = parse_version(version)
        alternatives = parse_requirement(requirement)
    except ValueError:
        return False
    return any(all(_compare(key, op, bound) for op, bound in alt) for alt in alternatives)


# -- recipes -----------------------------------------------------------------------------


def recipe_get(mapping: Any, key: str, default: Any = None) -> Any:
    """Case-insensitive lookup of a recipe key (recipes accept any key case)."""
    if not isinstance(mapping, Mapping):
        return default
    if key in mapping:
        return mapping[key]
    lowered = key.lower()
    for name, value in mapping.items():
        if isinstance(name, str) and name.lower() == lowered:
            return value
    return default


_ARCH_ALIASES = {"x86_64": "amd64", "arm64": "aarch64", "armv7l": "arm", "i386": "x86"}


def _platform_value_matches(wanted: Any, actual: str) -> bool:
    if wanted is None:
        return True
    text = str(wanted)
    if text in ("*", "all"):
        return True
    if len(text) > 1 and text.startswith("/") and text.endswith("/"):
        return re.fullmatch(text[1:-1], actual) is not None
    normal = _ARCH_ALIASES.get(text.lower(), text.lower())
    return normal == _ARCH_ALIASES.get(actual.lower(), actual.lower())


def matching_manifest(
    recipe: Mapping[str, Any], os_name: str, architecture: str
) -> dict[str, Any] | None:
    """The first manifest of ``recipe`` for this platform ({} if the recipe has none)."""
    manifests = recipe_get(recipe, "Manifests")
    if not manifests:
        return {}
    for manifest in manifests:
        if not isinstance(manifest, Mapping):
            continue
        platform = recipe_get(manifest, "Platform") or {}
        if _platform_value_matches(recipe_get(platform, "os"), os_name) and _platform_value_matches(
            recipe_get(platform, "architecture"), architecture
        ):
            return dict(manifest)
    return None


def recipe_dependencies(recipe: Mapping[str, Any]) -> dict[str, tuple[str, str]]:
    """{dependency name: (version requirement, HARD|SOFT)} of a recipe."""
    found = recipe_get(recipe, "ComponentDependencies") or {}
    out: dict[str, tuple[str, str]] = {}
    for name, spec in found.items():
        requirement = recipe_get(spec, "VersionRequirement") or "*"
        kind = recipe_get(spec, "DependencyType") or "HARD"
        out[str(name)] = (str(requirement), str(kind))
    return out


def default_configuration(recipe: Mapping[str, Any]) -> dict[str, Any]:
    configuration = recipe_get(recipe, "ComponentConfiguration") or {}
    default = recipe_get(configuration, "DefaultConfiguration") or {}
    if isinstance(default, dict):
        # _floats builds new dicts and lists all the way down: the result is already a copy.
        return dict(_floats(default))
    return _floats(copy.deepcopy(default)) if isinstance(default, Mapping) else {}


def _has_processes(recipe: Mapping[str, Any], manifest: Mapping[str, Any] | None) -> bool:
    lifecycle = recipe_get(manifest or {}, "Lifecycle")
    if lifecycle is None:
        lifecycle = recipe_get(recipe, "Lifecycle")
    if not isinstance(lifecycle, Mapping):
        return False
    return recipe_get(lifecycle, "Run") is not None or recipe_get(lifecycle, "Startup") is not None


# -- configuration -----------------------------------------------------------------------


def _floats(value: Any) -> Any:
    """The nucleus stores every JSON number as a double: 5 comes back as 5.0."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return float(value)
    if isinstance(value, dict):
        return {k: _floats(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_floats(v) for v in value]
    return value


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    return [p.replace("~1", "/").replace("~0", "~") for p in path.split("/")[1:]]


def _deep_merge(base: dict[str, Any], update: Mapping[str, Any]) -> None:
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            _deep_merge(base[key], value)
        else:
            base[key] = copy.deepcopy(value)


def _fill_missing(base: dict[str, Any], defaults: Mapping[str, Any]) -> None:
    for key, value in defaults.items():
        if key not in base:
            base[key] = copy.deepcopy(value)
        elif isinstance(value, Mapping) and isinstance(base[key], dict):
            _fill_missing(base[key], value)


def apply_configuration_update(
    current: dict[str, Any], default: dict[str, Any], update: Mapping[str, Any] | None
) -> dict[str, Any]:
    """Reset the ``reset`` JSON pointers to their default (or remove them), then merge."""
    result = copy.deepcopy(current)
    if not update:
        return result
    for path in update.get("reset") or []:
        keys = _pointer(path)
        if not keys:
            result = copy.deepcopy(default)
            continue
        parent: Any = result
        for key in keys[:-1]:
            parent = parent.get(key) if isinstance(parent, dict) else None
        if not isinstance(parent, dict):
            continue
        fallback: Any = default
        for key in keys:
            fallback = fallback.get(key, _MISSING) if isinstance(fallback, dict) else _MISSING
        if fallback is _MISSING:
            parent.pop(keys[-1], None)
        else:
            parent[keys[-1]] = copy.deepcopy(fallback)
    merge = update.get("merge")
    if merge:
        import json

        _deep_merge(result, _floats(json.loads(merge)))
    return result


_MISSING = object()


def _changed_paths(old: Any, new: Any, prefix: list[str]) -> list[list[str]]:
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[list[str]] = []
        for key in sorted(set(old) | set(new), key=str):
            if key not in old or key not in new:
                out.append([*prefix, key])
            else:
                out.extend(_changed_paths(old[key], new[key], [*prefix, key]))
        return out
    return [] if old == new else [prefix]


# -- device state ------------------------------------------------------------------------


@dataclass
class InstalledComponent:
    """One component on the device, with what ListInstalledComponents reports."""

    name: str
    version: str
    state: str
    recipe: dict[str, Any]
    configuration: dict[str, Any] = field(default_factory=dict)
    is_root: bool = False
    last_status_change: float = 0.0
    last_reported: float = 0.0
    last_installation_source: str | None = None
    status_codes: list[str] = field(default_factory=list)
    state_details: str | None = None

    def __deepcopy__(self, memo: dict[int, Any]) -> InstalledComponent:
        # The recipe is the registered component version's and is never changed in place:
        # a snapshot shares it (copying it for every device of a fleet dominated the cost).
        return replace(
            self,
            configuration=copy.deepcopy(self.configuration, memo),
            status_codes=list(self.status_codes),
        )

    def to_wire(self) -> dict[str, Any]:
        item: dict[str, Any] = {
            "componentName": self.name,
            "componentVersion": self.version,
            "lifecycleState": self.state,
            "isRoot": self.is_root,
            "lastStatusChangeTimestamp": self.last_status_change,
            "lastReportedTimestamp": self.last_reported,
            "lifecycleStatusCodes": list(self.status_codes),
        }
        if self.state_details:
            item["lifecycleStateDetails"] = self.state_details[:1000]
        if self.last_installation_source:
            item["lastInstallationSource"] = self.last_installation_source
        return item


@dataclass
class EffectiveDeployment:
    """A deployment as one device executes it (ListEffectiveDeployments)."""

    deployment: Deployment
    status: str
    created: float
    modified: float
    reason: str | None = None
    error_stack: list[str] = field(default_factory=list)
    error_types: list[str] = field(default_factory=list)

    def to_wire(self) -> dict[str, Any]:
        item: dict[str, Any] = {
            "deploymentId": self.deployment.deployment_id,
            "deploymentName": self.deployment.name,
            "iotJobId": self.deployment.iot_job_id,
            "iotJobArn": self.deployment.iot_job_arn,
            "targetArn": self.deployment.target_arn,
            "coreDeviceExecutionStatus": self.status,
            "creationTimestamp": self.created,
            "modifiedTimestamp": self.modified,
        }
        if self.reason:
            item["reason"] = self.reason
        if self.status in ("FAILED", "REJECTED", "TIMED_OUT", "CANCELED") and (
            self.error_stack or self.error_types
        ):
            item["statusDetails"] = {
                "errorStack": list(self.error_stack),
                "errorTypes": list(self.error_types),
            }
        return item


class DeploymentError(Exception):
    """A deployment the device cannot apply: reason plus the nucleus error hierarchy."""

    def __init__(self, message: str, stack: list[str], types: list[str]) -> None:
        super().__init__(message)
        self.message = message
        self.stack = stack
        self.types = types


@dataclass
class _InFlight:
    effective: EffectiveDeployment
    started: float
    due: float
    plan: dict[str, ComponentVersion]
    roots: dict[str, dict[str, Any]]
    snapshot: dict[str, InstalledComponent]
    installing: list[str]
    removing: list[str]
    #: The IoT job's inProgressTimeoutInMinutes ends the execution (TIMED_OUT) at ``due``.
    times_out: bool = False
    #: "notify" (awaiting answers to a pre-update round), "deferred" (a subscriber asked
    #: to wait; a new round is due) or "install" (the update runs; ``due`` ends it).
    stage: str = "install"
    #: Pre-update rounds sent so far (an answer to an older round is stale).
    round: int = 0
    #: Seconds the install takes once it starts.
    install_seconds: float = 0.0
    #: World time the IoT job's in-progress timeout ends the execution (None: no timeout).
    timeout_at: float | None = None
    #: Whether subscribers get pre/post-update events (policy NOTIFY_COMPONENTS).
    notify: bool = False
    #: The nucleus itself is updated: it restarts, so no post-update event follows.
    ggc_restarting: bool = False


class CoreDevice:
    """A Greengrass core device simulated on the world clock (implements ComponentHost)."""

    def __init__(
        self,
        emulator: GreengrassEmulator,
        thing_name: str,
        *,
        platform: str,
        architecture: str,
        now: float,
    ) -> None:
        self.thing_name = thing_name
        self.platform = platform
        self.architecture = architecture
        self.thing_arn = emulator.world.arn("iot", f"thing/{thing_name}")
        self.created_at = now
        self.status_updated_at = now
        #: (time, component, version, state) for every lifecycle transition, oldest first.
        self.history: list[tuple[float, str, str, str]] = []
        self._emulator = emulator
        self._installed: dict[str, InstalledComponent] = {}
        self._roots: dict[str, dict[str, Any]] = {}  # target ARN -> applied components spec
        self._effective: dict[str, EffectiveDeployment] = {}
        self._queue: deque[EffectiveDeployment] = deque()
        self._current: _InFlight | None = None
        self._free_at = now  # when the device can start its next deployment
        self._listeners: list[ConfigListener] = []
        self._notifier: UpdatePolicyNotifier | None = None
        self._last_status = "HEALTHY"
        nucleus = emulator.latest_public(NUCLEUS_NAME)
        if nucleus is not None:
            self._installed[nucleus.name] = InstalledComponent(
                nucleus.name,
                nucleus.version,
                "FINISHED",
                nucleus.recipe,
                default_configuration(nucleus.recipe),
                last_status_change=now,
                last_reported=now,
            )
            self.history.append((now, nucleus.name, nucleus.version, "FINISHED"))

    # -- ComponentHost ----------------------------------------------------------------
    def component(self, name: str) -> ComponentInfo | None:
        self._emulator.sync()
        with self._emulator.lock:
            found = self._installed.get(name)
            return None if found is None else self._info(found)

    def components(self) -> list[ComponentInfo]:
        self._emulator.sync()
        with self._emulator.lock:
            return [self._info(c) for c in self._installed.values()]

    def report_state(self, name: str, state: str) -> None:
        """IPC UpdateState: RUNNING or ERRORED. KeyError if ``name`` is not installed."""
        if state not in REPORTABLE_STATES:
            raise ValueError(f"state must be one of {REPORTABLE_STATES}, got {state!r}")
        self._emulator.sync()
        with self._emulator.lock:
            found = self._installed.get(name)
            if found is None:
                raise KeyError(f"component {name!r} is not installed on {self.thing_name}")
            now = self._emulator.world.clock.now()
            found.last_reported = now
            if found.state != state:
                self._set_state(found, state, now)
                found.status_codes = ["RUN_ERROR"] if state == "ERRORED" else []
            self._health_changed(now)

    def add_config_listener(self, listener: ConfigListener) -> None:
        with self._emulator.lock:
            self._listeners.append(listener)

    def set_update_notifier(self, notifier: UpdatePolicyNotifier | None) -> None:
        with self._emulator.lock:
            self._notifier = notifier

    def update_stage(self, deployment_id: str) -> str | None:
        """Where the deployment being applied is: "notify" (awaiting answers to a
        pre-update event), "deferred", "install"; None when it is not being applied."""
        with self._emulator.lock:
            current = self._current
            if current is None or current.effective.deployment.deployment_id != deployment_id:
                return None
            return current.stage

    def wait_for_update_stage(self, deployment_id: str, stage: str, timeout: float) -> bool:
        """Wait (real time) until :meth:`update_stage` is ``stage``; False on timeout."""
        with self._emulator.stage_changed:
            return self._emulator.stage_changed.wait_for(
                lambda: self.update_stage(deployment_id) == stage, timeout
            )

    # -- status for the control plane --------------------------------------------------
    @property
    def status(self) -> str:
        """HEALTHY unless a component is ERRORED or BROKEN."""
        bad = any(c.state in ("ERRORED", "BROKEN") for c in self._installed.values())
        return "UNHEALTHY" if bad else "HEALTHY"

    @property
    def core_version(self) -> str:
        nucleus = self._installed.get(NUCLEUS_NAME)
        return nucleus.version if nucleus else NUCLEUS_VERSION

    @property
    def busy(self) -> bool:
        return self._current is not None or bool(self._queue)

    def installed(self) -> list[InstalledComponent]:
        return list(self._installed.values())

    def effective_deployments(self) -> list[EffectiveDeployment]:
        """Newest first."""
        return sorted(self._effective.values(), key=lambda e: (-e.created, -e.deployment.sequence))

    def effective(self, deployment_id: str) -> EffectiveDeployment | None:
        return self._effective.get(deployment_id)

    # -- deployments arriving and leaving ---------------------------------------------
    def receive(self, deployment: Deployment, now: float) -> None:
        """A deployment for one of this device's targets: queue it (QUEUED)."""
        if deployment.deployment_id in self._effective:
            return
        for queued in list(self._queue):
            if queued.deployment.target_arn == deployment.target_arn:
                self._queue.remove(queued)
                self._finish_effective(
                    queued, "CANCELED", now, f"Superseded by deployment {deployment.deployment_id}"
                )
        effective = EffectiveDeployment(deployment, "QUEUED", now, now)
        self._effective[deployment.deployment_id] = effective
        self._queue.append(effective)

    def cancel(self, deployment_id: str, now: float, reason: str = "Deployment canceled") -> None:
        """CancelDeployment (or an abort): drop it from the queue, or stop it if it is
        being applied."""
        for queued in list(self._queue):
            if queued.deployment.deployment_id == deployment_id:
                self._queue.remove(queued)
                self._finish_effective(queued, "CANCELED", now, reason)
                return
        current = self._current
        if current is not None and current.effective.deployment.deployment_id == deployment_id:
            # Nothing is applied before completion: putting the snapshot back is enough.
            self._installed = current.snapshot
            self._current = None
            self._free_at = now
            if current.stage == "notify" and self._notifier is not None:
                self._notifier.end_round()
            self._finish_effective(current.effective, "CANCELED", now, reason)
            # The nucleus tells subscribers a pending update will not happen (post-update).
            self._post_update(current)

    # -- time ------------------------------------------------------------------------------
    def next_due(self) -> float | None:
        if self._current is not None:
            return self._current.due
        if self._queue:
            return max(self._free_at, self._queue[0].created)
        return None

    def advance(self, now: float) -> float | None:
        """Run every deployment step due up to ``now``; return when the next one is due."""
        while True:
            due = self.next_due()
            if due is None or due > now:
                return due
            current = self._current
            if current is None:
                self._start(self._queue.popleft(), due)
            elif current.stage == "notify":  # the policy timeout passed
                recheck_ms = self._notifier.end_round() if self._notifier is not None else 0
                self._end_round(current, due, recheck_ms)
            elif current.stage == "deferred":
                self._notify_round(current, due)
            elif current.times_out:
                self._time_out(current, due)
            else:
                self._complete(current, due)

    def _start(self, effective: EffectiveDeployment, at: float) -> None:
        deployment = effective.deployment
        effective.status = "IN_PROGRESS"
        effective.modified = at
        roots = {target: dict(spec) for target, spec in self._roots.items()}
        roots[deployment.target_arn] = deployment.components
        try:
            plan = self._resolve(roots)
        except DeploymentError as error:
            effective.error_stack, effective.error_types = error.stack, error.types
            self._finish_effective(
                effective, "FAILED", at, f"FAILED_NO_STATE_CHANGE: {error.message}"
            )
            self._free_at = at
            return
        installing = [
            name
            for name, chosen in _dependencies_first(plan).items()
            if name not in self._installed
            or self._installed[name].version != chosen.version
            or self._installed[name].state == "BROKEN"
        ]
        removing = [name for name in self._installed if name not in plan and name != NUCLEUS_NAME]
        snapshot = copy.deepcopy(self._installed)
        for name in installing:
            if name not in self._installed:
                chosen = plan[name]
                self._installed[name] = InstalledComponent(
                    name, chosen.version, "NEW", chosen.recipe, last_reported=at
                )
                self._set_state(self._installed[name], "NEW", at)
        timeout = (deployment.iot_job_configuration.get("timeoutConfig") or {}).get(
            "inProgressTimeoutInMinutes"
        )
        update_policy = deployment.policies.get("componentUpdatePolicy") or {}
        flight = _InFlight(
            effective, at, at, plan, roots, snapshot, installing, removing,
            install_seconds=max(0.0, float(self._emulator.install_seconds)),
            timeout_at=None if timeout is None else at + float(timeout) * 60.0,
            notify=update_policy.get("action", "NOTIFY_COMPONENTS") == "NOTIFY_COMPONENTS",
            ggc_restarting=NUCLEUS_NAME in installing,
        )
        self._current = flight
        if flight.notify:
            self._notify_round(flight, at)
        else:
            self._begin_install(flight, at)

    # -- the component update policy -----------------------------------------------------
    def _notify_round(self, flight: _InFlight, at: float) -> None:
        """Send a round of pre-update events; wait for answers up to the policy timeout."""
        flight.round += 1
        round_number = flight.round
        notifier = self._notifier

        def answered(recheck_ms: int) -> None:
            self._round_answered(flight, round_number, recheck_ms)

        deployment = flight.effective.deployment
        if notifier is None or not notifier.pre_update(
            deployment.deployment_id, flight.ggc_restarting, answered
        ):
            self._begin_install(flight, at)
            return
        policy = deployment.policies.get("componentUpdatePolicy") or {}
        flight.stage = "notify"
        flight.due = at + float(policy.get("timeoutInSeconds", 60))

    def _round_answered(self, flight: _InFlight, round_number: int, recheck_ms: int) -> None:
        """Every subscriber answered (an IPC thread): end the round at the world's now."""
        self._emulator.sync()  # a policy timeout due before now ends the round first
        with self._emulator.lock:
            if self._current is not flight or flight.stage != "notify" or flight.round != round_number:
                return
            if self._notifier is not None:
                self._notifier.end_round()
            self._end_round(flight, self._emulator.world.clock.now(), recheck_ms)
            self._emulator.wake_device(self)
            self._emulator.stage_changed.notify_all()

    def _end_round(self, flight: _InFlight, at: float, recheck_ms: int) -> None:
        if recheck_ms > 0:
            flight.stage = "deferred"
            flight.due = at + recheck_ms / 1000.0
        else:
            self._begin_install(flight, at)

    def _begin_install(self, flight: _InFlight, at: float) -> None:
        flight.stage = "install"
        flight.due = at + flight.install_seconds
        if flight.timeout_at is not None and flight.due > flight.timeout_at:
            flight.times_out = True
            flight.due = max(at, flight.timeout_at)

    def _post_update(self, flight: _InFlight) -> None:
        """After a notified update ran (or was dropped): the post-update event."""
        if flight.notify and not flight.ggc_restarting:
            deployment_id = flight.effective.deployment.deployment_id
            if self._notifier is not None:
                self._notifier.post_update(deployment_id)
            self._emulator.post_update_done(self, deployment_id)

    def _time_out(self, flight: _InFlight, at: float) -> None:
        """The execution stayed IN_PROGRESS past the job's timeout: TIMED_OUT, nothing applied."""
        self._installed = flight.snapshot
        self._current = None
        self._free_at = at
        minutes = flight.effective.deployment.iot_job_configuration["timeoutConfig"][
            "inProgressTimeoutInMinutes"
        ]
        self._finish_effective(
            flight.effective, "TIMED_OUT", at, f"Execution timed out after {minutes} minute(s)"
        )
        self._post_update(flight)

    def _complete(self, flight: _InFlight, at: float) -> None:
        effective = flight.effective
        deployment = effective.deployment
        policy = deployment.policies.get("failureHandlingPolicy", "ROLLBACK")
        failures: dict[str, str] = {}
        for name in flight.installing:
            message = self._emulator.take_install_failure(name, flight.plan[name].version)
            if message is not None:
                failures[name] = message
        self._current = None
        self._free_at = at
        if failures and policy == "ROLLBACK":
            self._installed = flight.snapshot
            for component in self._installed.values():
                component.last_reported = at
            first = next(iter(failures))
            effective.error_stack, effective.error_types = _install_error(first)
            self._finish_effective(
                effective,
                "FAILED",
                at,
                f"FAILED_ROLLBACK_COMPLETE: installing {first}: {failures[first]}",
            )
            self._post_update(flight)
            return
        notifications: list[tuple[str, list[str]]] = []
        for name in flight.removing:
            removed = self._installed.pop(name)
            self.history.append((at, name, removed.version, "STOPPING"))
        updates = {
            name: spec.get("configurationUpdate") for name, spec in deployment.components.items()
        }
        root_names = {name for spec in flight.roots.values() for name in spec}
        for name, chosen in _dependencies_first(flight.plan).items():
            existing = self._installed.get(name)
            if name in flight.installing:
                default = default_configuration(chosen.recipe)
                if existing is None or existing.state == "NEW":
                    existing = self._installed[name] = InstalledComponent(
                        name, chosen.version, "NEW", chosen.recipe, default
                    )
                    fresh = True
                else:
                    fresh = False
                    existing.version, existing.recipe = chosen.version, chosen.recipe
                    _fill_missing(existing.configuration, default)
                # Only an update of an installed component notifies changed paths.
                old_configuration = {} if fresh else copy.deepcopy(existing.configuration)
                existing.configuration = apply_configuration_update(
                    existing.configuration, default, updates.get(name)
                )
                existing.last_installation_source = deployment.deployment_id
                if name in failures:
                    self._set_state(existing, "BROKEN", at)
                    existing.status_codes = ["INSTALL_ERROR"]
                    existing.state_details = failures[name]
                else:
                    manifest = matching_manifest(chosen.recipe, self.platform, self.architecture)
                    final = "RUNNING" if _has_processes(chosen.recipe, manifest) else "FINISHED"
                    for state in ("INSTALLED", "STARTING", final):
                        self._set_state(existing, state, at)
                    existing.status_codes, existing.state_details = [], None
                if not fresh:
                    notifications += [
                        (name, p)
                        for p in _changed_paths(old_configuration, existing.configuration, [])
                    ]
            else:
                assert existing is not None
                if updates.get(name):
                    old_configuration = existing.configuration
                    existing.configuration = apply_configuration_update(
                        old_configuration, default_configuration(chosen.recipe), updates[name]
                    )
                    notifications += [
                        (name, p)
                        for p in _changed_paths(old_configuration, existing.configuration, [])
                    ]
                if name in deployment.components:
                    existing.last_installation_source = deployment.deployment_id
            existing.is_root = name in root_names
            existing.last_reported = at
        self._roots = flight.roots
        if failures:
            first = next(iter(failures))
            effective.error_stack, effective.error_types = _install_error(first)
            self._finish_effective(
                effective,
                "FAILED",
                at,
                f"FAILED_ROLLBACK_NOT_REQUESTED: installing {first}: {failures[first]}",
            )
        else:
            self._finish_effective(effective, "SUCCEEDED", at, "SUCCESSFUL")
        self._health_changed(at)
        for name, path in notifications:
            for listener in list(self._listeners):
                listener(name, path)
        self._post_update(flight)

    # -- dependency resolution ---------------------------------------------------------
    def _resolve(self, roots: Mapping[str, Mapping[str, Any]]) -> dict[str, ComponentVersion]:
        requirements: dict[str, dict[str, str]] = {}
        for target, specs in roots.items():
            for name, spec in specs.items():
                requirements.setdefault(name, {})[target] = "=" + spec["componentVersion"]
        for name, by_target in requirements.items():
            if len(set(by_target.values())) > 1:
                pins = ", ".join(f"{t} requires {r}" for t, r in sorted(by_target.items()))
                raise DeploymentError(
                    f"Conflicting version requirements for {name}: {pins}",
                    [
                        "DEPLOYMENT_FAILURE",
                        "NO_AVAILABLE_COMPONENT_VERSION",
                        "COMPONENT_VERSION_REQUIREMENTS_NOT_MET",
                    ],
                    ["REQUEST_ERROR"],
                )
        chosen: dict[str, ComponentVersion] = {}
        pending: deque[str] = deque(requirements)
        steps = 0
        while pending:
            steps += 1
            if steps > 10_000:
                raise DeploymentError(
                    "Dependency resolution did not converge",
                    ["DEPLOYMENT_FAILURE", "NO_AVAILABLE_COMPONENT_VERSION"],
                    ["COMPONENT_RECIPE_ERROR"],
                )
            name = pending.popleft()
            candidate = self._pick(name, requirements.get(name, {}))
            previous = chosen.get(name)
            if previous is candidate:
                continue
            chosen[name] = candidate
            if previous is not None:
                for dependency in recipe_dependencies(previous.recipe):
                    requirements.get(dependency, {}).pop(name, None)
            for dependency, (requirement, _kind) in recipe_dependencies(candidate.recipe).items():
                requirements.setdefault(dependency, {})[name] = requirement
                have = chosen.get(dependency)
                if have is None or not satisfies(have.version, requirement):
                    pending.append(dependency)
        # Keep what the roots still reach (a dependency of a replaced version may be stale).
        reachable: dict[str, ComponentVersion] = {}
        walk: deque[str] = deque(n for specs in roots.values() for n in specs)
        while walk:
            name = walk.popleft()
            if name in reachable:
                continue
            reachable[name] = chosen[name]
            walk.extend(recipe_dependencies(chosen[name].recipe))
        return reachable

    def _pick(self, name: str, requirements: Mapping[str, str]) -> ComponentVersion:
        versions = self._emulator.versions_of(name)
        if not versions:
            wanted_by = ", ".join(sorted(requirements)) or "the deployment"
            raise DeploymentError(
                f"Component {name} (required by {wanted_by}) does not exist",
                [
                    "DEPLOYMENT_FAILURE",
                    "NO_AVAILABLE_COMPONENT_VERSION",
                    "COMPONENT_VERSION_REQUIREMENTS_NOT_MET",
                ],
                ["COMPONENT_RECIPE_ERROR"],
            )
        fitting = [
            v
            for v in versions
            if all(satisfies(v.version, r) for r in requirements.values())
            and matching_manifest(v.recipe, self.platform, self.architecture) is not None
        ]
        if not fitting:
            needs = "; ".join(f"{who} requires {r}" for who, r in sorted(requirements.items()))
            raise DeploymentError(
                f"No version of {name} fits {self.platform}/{self.architecture} and {needs}",
                [
                    "DEPLOYMENT_FAILURE",
                    "NO_AVAILABLE_COMPONENT_VERSION",
                    "COMPONENT_VERSION_REQUIREMENTS_NOT_MET",
                ],
                ["REQUEST_ERROR"],
            )
        local = self._installed.get(name)
        if local is not None and local.state != "BROKEN":
            for candidate in fitting:
                if candidate.version == local.version:
                    return candidate
        return max(fitting, key=lambda v: parse_version(v.version))

    # -- helpers ----------------------------------------------------------------------------
    def _info(self, component: InstalledComponent) -> ComponentInfo:
        return ComponentInfo(
            component.name,
            component.version,
            component.state,
            copy.deepcopy(component.configuration),
            copy.deepcopy(component.recipe),
        )

    def _set_state(self, component: InstalledComponent, state: str, at: float) -> None:
        assert state in LIFECYCLE_STATES
        component.state = state
        component.last_status_change = at
        self.history.append((at, component.name, component.version, state))

    def _health_changed(self, at: float) -> None:
        status = self.status
        if status != self._last_status:
            self.status_updated_at = at
        self._last_status = status

    def _finish_effective(
        self, effective: EffectiveDeployment, status: str, at: float, reason: str | None
    ) -> None:
        effective.status = status
        effective.modified = at
        effective.reason = reason
        self._emulator.device_finished(self, effective)

    def states(self, names: Iterable[str] | None = None) -> dict[str, str]:
        """{component: lifecycle state} (for tests and the demo)."""
        wanted = set(names) if names is not None else None
        return {n: c.state for n, c in self._installed.items() if wanted is None or n in wanted}


def _install_error(name: str) -> tuple[list[str], list[str]]:
    kind = "AWS_COMPONENT_ERROR" if name.startswith("aws.") else "USER_COMPONENT_ERROR"
    return ["DEPLOYMENT_FAILURE", "COMPONENT_UPDATE_ERROR", "COMPONENT_BROKEN"], [kind]


def _dependencies_first(plan: Mapping[str, ComponentVersion]) -> dict[str, ComponentVersion]:
    """The plan ordered so that every component comes after its dependencies."""
    ordered: dict[str, ComponentVersion] = {}
    visiting: set[str] = set()

    def visit(name: str) -> None:
        if name in ordered or name in visiting or name not in plan:
            return
        visiting.add(name)
        for dependency in recipe_dependencies(plan[name].recipe):
            visit(dependency)
        ordered[name] = plan[name]

    for name in sorted(plan):
        visit(name)
    return ordered
