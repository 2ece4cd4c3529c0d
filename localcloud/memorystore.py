"""The agent's rollout store kept in memory, for simulations of very large fleets.

Same contract as the SQLite ledger (``agent.ports.RolloutStore``) without durability: a
simulated device that is never killed needs none, and 100,000 SQLite databases do not
fit in memory. Unit tests use it as their fake store too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from agent.ports import KEEP, FactChanges, Facts, Keep, OutgoingMessage
from agent.rollout import Phase, Rollout

__all__ = ["MemoryStore"]


@dataclass
class MemoryStore:
    """The rollout store in memory (same contract as the SQLite ledger)."""

    stored_facts: Facts = field(default_factory=Facts)
    stored: dict[int, Rollout] = field(default_factory=dict)
    job_polls: dict[int, float] = field(default_factory=dict)
    outbox: list[tuple[int, OutgoingMessage]] = field(default_factory=list)
    epoch: str = "e-memory"

    def facts(self) -> Facts:
        return self.stored_facts

    def update_facts(self, changes: FactChanges) -> None:
        self.stored_facts = self.stored_facts.changed(changes)

    def save(
        self,
        rollout: Rollout,
        messages: Sequence[OutgoingMessage] = (),
        facts: FactChanges | None = None,
        *,
        job_poll_due: float | Keep | None = KEEP,
    ) -> Rollout:
        if rollout.id is None:
            rollout.id = max(self.stored, default=0) + 1
        self.stored[rollout.id] = rollout.model_copy()
        for message in messages:
            self.outbox.append((len(self.outbox) + 1, message))
        if facts is not None:
            self.update_facts(facts)
        if rollout.phase.ended or job_poll_due is None:
            self.job_polls.pop(rollout.id, None)
        elif not isinstance(job_poll_due, Keep):
            self.job_polls[rollout.id] = job_poll_due
        return rollout

    def active_rollout(self) -> Rollout | None:
        active = [r for r in self.stored.values() if not r.phase.ended]
        return max(active, key=lambda r: r.id or 0).model_copy() if active else None

    def rollouts(self, *, model_version: int | None = None, limit: int = 50) -> list[Rollout]:
        found = [
            r
            for r in self.stored.values()
            if model_version is None or r.model_version == model_version
        ]
        return [r.model_copy() for r in sorted(found, key=lambda r: -(r.id or 0))[:limit]]

    def job_poll_due(self, rollout_id: int) -> float | None:
        return self.job_polls.get(rollout_id)

    def failed_deployment_ids(self) -> set[str]:
        return {
            r.deployment_id
            for r in self.stored.values()
            if r.phase is Phase.FAILED and r.deployment_id
        }

    def shift_due_times(self, seconds: float) -> None:
        facts = self.stored_facts
        if facts.next_check_at is not None:
            self.stored_facts = replace(facts, next_check_at=facts.next_check_at + seconds)
        self.job_polls = {k: v + seconds for k, v in self.job_polls.items()}
        for rollout in self.stored.values():
            if not rollout.phase.ended:
                rollout.next_action_at += seconds
            elif rollout.phase is Phase.FAILED and rollout.ended_at is not None:
                rollout.ended_at += seconds

    def events(self) -> list[str]:
        """The status events queued, in order (their phase names)."""
        import json

        return [
            json.loads(m.render(seq, self.epoch))["phase"]
            for seq, m in self.outbox
            if m.kind == "status"
        ]
