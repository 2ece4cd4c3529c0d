"""The durable ledger (SQLite, stdlib): rollouts, agent facts and the message outbox.

A rollout row and the status events it produced are written in ONE transaction, so a
kill -9 or power cut never leaves a state change without its report or a report without
its state change. The database runs in WAL mode with ``synchronous=FULL``.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.model import Phase, Rollout

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT
);
CREATE TABLE IF NOT EXISTS rollouts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    model_version INTEGER NOT NULL,
    platform_key TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    phase TEXT NOT NULL,
    job_name TEXT,
    client_token TEXT,
    component_name TEXT,
    component_version TEXT,
    target_arn TEXT,
    deployment_id TEXT,
    deployment_token TEXT,
    error_type TEXT,
    error_code TEXT,
    error_message TEXT,
    polls INTEGER NOT NULL DEFAULT 0,
    throttles INTEGER NOT NULL DEFAULT 0,
    last_reported TEXT,
    next_action_at REAL NOT NULL,
    started_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    ended_at REAL,
    UNIQUE (model_version, platform_key, attempt)
);
CREATE TABLE IF NOT EXISTS outbox (
    sequence INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    retain INTEGER NOT NULL,
    created_at REAL NOT NULL
);
"""

_ROLLOUT_COLUMNS = [name for name in Rollout.model_fields if name != "id"]


@dataclass(frozen=True)
class OutgoingMessage:
    """A message to enqueue; ``render`` gets the sequence number and returns the payload."""

    kind: str
    topic: str
    render: Callable[[int], bytes]
    retain: bool = False


@dataclass(frozen=True)
class QueuedMessage:
    sequence: int
    kind: str
    topic: str
    payload: bytes
    retain: bool
    created_at: float


class Ledger:
    """SQLite-backed state. Thread-safe: one connection guarded by a lock."""

    def __init__(self, path: Path | str) -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA busy_timeout=5000")
        with self.transaction() as db:
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    db.execute(statement)
            found = db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
            if found is None:
                db.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
            elif int(found["value"]) > SCHEMA_VERSION:
                raise RuntimeError(
                    f"ledger {self.path} has schema {found['value']}, newer than this agent's"
                )

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One atomic unit of work (BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on error)."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    # -- facts ------------------------------------------------------------------------
    def get(self, key: str, default: str | None = None) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return default if row is None or row["value"] is None else str(row["value"])

    def put(self, facts: dict[str, str | None]) -> None:
        with self.transaction() as db:
            self._put(db, facts)

    @staticmethod
    def _put(db: sqlite3.Connection, facts: dict[str, str | None]) -> None:
        for key, value in facts.items():
            db.execute(
                "INSERT INTO meta(key, value) VALUES (?, ?) "
                "ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                (key, value),
            )

    # -- rollouts -----------------------------------------------------------------------
    def save(
        self,
        rollout: Rollout,
        messages: Sequence[OutgoingMessage] = (),
        facts: dict[str, str | None] | None = None,
    ) -> Rollout:
        """Insert or update ``rollout``, enqueue ``messages`` and set ``facts`` atomically.

        A new rollout gets its ``id`` assigned in place before ``messages`` render.
        """
        with self.transaction() as db:
            values = [_to_sql(getattr(rollout, c)) for c in _ROLLOUT_COLUMNS]
            if rollout.id is None:
                cursor = db.execute(
                    f"INSERT INTO rollouts ({', '.join(_ROLLOUT_COLUMNS)}) "
                    f"VALUES ({', '.join('?' for _ in _ROLLOUT_COLUMNS)})",
                    values,
                )
                # Set in place: queued messages render with the new id.
                rollout.id = cursor.lastrowid
            else:
                db.execute(
                    f"UPDATE rollouts SET {', '.join(f'{c}=?' for c in _ROLLOUT_COLUMNS)} WHERE id=?",
                    [*values, rollout.id],
                )
            self._enqueue(db, messages, rollout.updated_at)
            if facts:
                self._put(db, facts)
        return rollout

    def active_rollout(self) -> Rollout | None:
        """The newest rollout that has not ended, if any."""
        with self._lock:
            row = self._db.execute(
                "SELECT * FROM rollouts WHERE phase NOT IN (?, ?) ORDER BY id DESC LIMIT 1",
                (Phase.SUCCEEDED.value, Phase.FAILED.value),
            ).fetchone()
        return None if row is None else _rollout(row)

    def rollouts(self, *, model_version: int | None = None, limit: int = 50) -> list[Rollout]:
        """Rollouts newest first, optionally of one model version."""
        sql, args = "SELECT * FROM rollouts", []
        if model_version is not None:
            sql += " WHERE model_version=?"
            args.append(model_version)
        sql += " ORDER BY id DESC LIMIT ?"
        args.append(limit)
        with self._lock:
            return [_rollout(r) for r in self._db.execute(sql, args).fetchall()]

    def shift_due_times(self, seconds: float) -> None:
        """Move every stored due-time by ``seconds`` (the wall clock jumped by that much):
        the next check, job-status polls, the active rollout's next action and the end
        of failed rollouts (their retry is due a fixed time after it)."""
        with self.transaction() as db:
            db.execute(
                "UPDATE meta SET value = CAST(value AS REAL) + ? "
                "WHERE key = 'next_check_at' OR key LIKE 'job_poll_due:%'",
                (seconds,),
            )
            db.execute(
                "UPDATE rollouts SET next_action_at = next_action_at + ? WHERE phase NOT IN (?, ?)",
                (seconds, Phase.SUCCEEDED.value, Phase.FAILED.value),
            )
            db.execute(
                "UPDATE rollouts SET ended_at = ended_at + ? WHERE phase = ? AND ended_at IS NOT NULL",
                (seconds, Phase.FAILED.value),
            )

    def failed_deployment_ids(self) -> set[str]:
        """Deployments that a rollout of this device saw fail (never to be adopted)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT DISTINCT deployment_id FROM rollouts WHERE phase=? AND deployment_id IS NOT NULL",
                (Phase.FAILED.value,),
            ).fetchall()
        return {str(r["deployment_id"]) for r in rows}

    # -- outbox -------------------------------------------------------------------------
    def enqueue(self, messages: Sequence[OutgoingMessage], now: float) -> list[int]:
        with self.transaction() as db:
            return self._enqueue(db, messages, now)

    @staticmethod
    def _enqueue(db: sqlite3.Connection, messages: Sequence[OutgoingMessage], now: float) -> list[int]:
        sequences = []
        for message in messages:
            cursor = db.execute(
                "INSERT INTO outbox(kind, topic, payload, retain, created_at) VALUES (?, ?, x'', ?, ?)",
                (message.kind, message.topic, int(message.retain), now),
            )
            sequence = int(cursor.lastrowid or 0)
            db.execute(
                "UPDATE outbox SET payload=? WHERE sequence=?", (message.render(sequence), sequence)
            )
            sequences.append(sequence)
        return sequences

    def pending(self, limit: int = 100) -> list[QueuedMessage]:
        """Unacknowledged messages, oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM outbox ORDER BY sequence LIMIT ?", (limit,)
            ).fetchall()
        return [
            QueuedMessage(
                r["sequence"], r["kind"], r["topic"], bytes(r["payload"]), bool(r["retain"]), r["created_at"]
            )
            for r in rows
        ]

    def ack(self, sequence: int) -> None:
        """The broker acknowledged ``sequence``: forget it."""
        with self.transaction() as db:
            db.execute("DELETE FROM outbox WHERE sequence=?", (sequence,))

    def outbox_depth(self, kind: str | None = None) -> int:
        with self._lock:
            if kind is None:
                row = self._db.execute("SELECT COUNT(*) AS n FROM outbox").fetchone()
            else:
                row = self._db.execute(
                    "SELECT COUNT(*) AS n FROM outbox WHERE kind=?", (kind,)
                ).fetchone()
        return int(row["n"])

    def drop_oldest(self, kind: str, count: int) -> int:
        """Delete up to ``count`` oldest messages of ``kind``; returns how many."""
        with self.transaction() as db:
            cursor = db.execute(
                "DELETE FROM outbox WHERE sequence IN "
                "(SELECT sequence FROM outbox WHERE kind=? ORDER BY sequence LIMIT ?)",
                (kind, count),
            )
            return int(cursor.rowcount)


def _to_sql(value: Any) -> Any:
    if isinstance(value, Phase):
        return value.value
    return value


def _rollout(row: sqlite3.Row) -> Rollout:
    return Rollout.model_validate(dict(zip(row.keys(), tuple(row), strict=True)))
