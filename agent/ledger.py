"""The durable ledger (SQLite, stdlib): rollouts, agent facts and the message outbox.

A rollout row and the status events it produced are written in ONE transaction, so a
kill -9 or power cut never leaves a state change without its report or a report without
its state change. The database runs in WAL mode with ``synchronous=FULL``.

Each ledger has an ``epoch``, a random id made when it is created: message sequences
start again at 1 in a new ledger, so subscribers de-duplicate on (epoch, sequence).
This module is the SQLite adapter: it translates ``sqlite3`` errors into the agent's
error tree (an unusable state directory is a configuration error, a full disk a
transient :class:`~agent.errors.StateStorageError`, a damaged file a
:class:`~agent.errors.LedgerCorruptError`). A ledger found corrupt is moved aside (kept
for diagnosis) and a new one started: the cloud side is adopted again from there.
"""

from __future__ import annotations

import os
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from agent import errors
from agent.ports import KEEP, FactChanges, Facts, Keep, LastError
from agent.ports import OutgoingMessage as OutgoingMessage  # re-exported: the outbox's message
from agent.rollout import ENDED_PHASES, Phase, Rollout

log = structlog.get_logger("agent.ledger")

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
class QueuedMessage:
    sequence: int
    kind: str
    topic: str
    payload: bytes
    retain: bool
    created_at: float


#: SQLite result codes (``sqlite3.Error.sqlite_errorcode``, primary code in the low byte).
_SQLITE_CORRUPT, _SQLITE_FULL, _SQLITE_NOTADB = 11, 13, 26


def _translate(exc: sqlite3.Error, path: str) -> errors.AgentError:
    """The agent's error for a SQLite error on the ledger at ``path``."""
    code = int(getattr(exc, "sqlite_errorcode", 0) or 0) & 0xFF
    text = str(exc)
    if code in (_SQLITE_CORRUPT, _SQLITE_NOTADB) or "malformed" in text or "not a database" in text:
        return errors.LedgerCorruptError(f"ledger {path} is corrupt: {text}")
    if code == _SQLITE_FULL or "is full" in text:
        return errors.StateStorageError(f"ledger {path} cannot grow: {text}")
    return errors.StateStorageError(f"ledger {path}: {text}")


class Ledger:
    """SQLite-backed state. Thread-safe: one connection guarded by a lock.

    Opening it creates the state directory (0700) and the database (0600) if needed; an
    unusable directory raises :class:`~agent.errors.ConfigurationError` naming
    ``stateDir``. A corrupt database is moved aside and replaced (``reset_reason`` says
    so until the health report takes it).
    """

    def __init__(self, path: Path | str, *, read_only: bool = False) -> None:
        self.path = str(path)
        self.read_only = read_only
        if read_only and not Path(self.path).is_file():
            self.path = ":memory:"  # nothing to read: an empty ledger that touches no file
        self._lock = threading.RLock()
        #: why this ledger is new (None: it existed); taken once by the health report
        self.reset_reason: str | None = None
        self.epoch = ""
        self._db = self._open()

    # -- opening -----------------------------------------------------------------------
    def _open(self) -> sqlite3.Connection:
        if self.path == ":memory:":
            return self._connect(new=True)
        if self.read_only:
            return self._connect_read_only()
        file = Path(self.path)
        _prepare_state_dir(file.parent)
        existed = file.exists() and file.stat().st_size > 0
        try:
            return self._connect(new=not existed)
        except errors.LedgerCorruptError as corrupt:
            kept = self._move_aside()
            self.reset_reason = f"the previous ledger was corrupt ({corrupt.message}); it was moved to {kept}"
            log.error("ledger corrupt: moved aside, starting a new one", kept=kept, error=corrupt.message)
            return self._connect(new=True)

    def _connect(self, *, new: bool) -> sqlite3.Connection:
        if new and self.path != ":memory:":
            # Owner-only from the first byte: the ledger holds the device's rollout history.
            os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600))
            if self.reset_reason is None:
                self.reset_reason = f"no ledger at {self.path}"
        try:
            db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        except sqlite3.Error as exc:
            raise _state_dir_error(Path(self.path).parent, str(exc)) from exc
        try:
            db.row_factory = sqlite3.Row
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.execute("PRAGMA busy_timeout=5000")
            if not new:
                problem = db.execute("PRAGMA quick_check").fetchone()[0]
                if problem != "ok":
                    raise errors.LedgerCorruptError(f"ledger {self.path} is corrupt: {problem}")
            self._create_schema(db)
        except sqlite3.Error as exc:
            db.close()
            raise _translate(exc, self.path) from exc
        except errors.LedgerCorruptError:
            db.close()
            raise
        return db

    def _connect_read_only(self) -> sqlite3.Connection:
        """The existing database, opened so that nothing can write to it.

        Without a WAL file no agent has the ledger open (a running one keeps it), so it
        is read as immutable: SQLite then creates no -wal/-shm files either.
        """
        idle = not os.path.exists(self.path + "-wal")
        uri = Path(self.path).resolve().as_uri() + ("?immutable=1" if idle else "?mode=ro")
        try:
            db = sqlite3.connect(uri, uri=True, check_same_thread=False, isolation_level=None)
            db.row_factory = sqlite3.Row
            db.execute("PRAGMA busy_timeout=5000")
            found = db.execute("SELECT value FROM meta WHERE key='epoch'").fetchone()
        except sqlite3.Error as exc:
            raise _translate(exc, self.path) from exc
        self.epoch = "" if found is None else str(found["value"])
        return db

    def _create_schema(self, db: sqlite3.Connection) -> None:
        db.execute("BEGIN IMMEDIATE")
        for statement in _SCHEMA.split(";"):
            if statement.strip():
                db.execute(statement)
        found = db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        if found is None:
            db.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
        elif int(found["value"]) > SCHEMA_VERSION:
            db.execute("ROLLBACK")
            raise errors.ConfigurationError(
                f"stateDir: ledger {self.path} has schema {found['value']}, newer than this agent's"
            )
        epoch = db.execute("SELECT value FROM meta WHERE key='epoch'").fetchone()
        if epoch is None:
            self.epoch = secrets.token_hex(8)
            db.execute("INSERT INTO meta VALUES ('epoch', ?)", (self.epoch,))
            if self.reset_reason is None and self.path != ":memory:":
                self.reset_reason = "the ledger had no epoch (written by an older agent)"
        else:
            self.epoch = str(epoch["value"])
        db.execute("COMMIT")
        if self.reset_reason is not None:
            log.warning(
                "new ledger: message sequences start again at 1 under a new epoch",
                epoch=self.epoch, reason=self.reset_reason,
            )

    def _move_aside(self) -> str:
        """Rename the database (and its WAL and shared-memory files) for diagnosis."""
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        kept = f"{self.path}.corrupt-{stamp}"
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(self.path + suffix):
                os.replace(self.path + suffix, kept + suffix)
        return kept

    def replace_corrupt(self, error: errors.LedgerCorruptError) -> str:
        """The database went bad while running: move it aside and start a new one in its
        place (same object, so every part of the agent keeps its reference)."""
        with self._lock:
            with suppress(sqlite3.Error):
                self._db.close()
            kept = self._move_aside()
            self.reset_reason = f"the ledger became corrupt ({error.message}); it was moved to {kept}"
            log.error("ledger corrupt: moved aside, starting a new one", kept=kept, error=error.message)
            self._db = self._connect(new=True)
            return kept

    def take_reset_reason(self) -> str | None:
        """Why this ledger is new, once (for the first health report); None otherwise."""
        with self._lock:
            reason, self.reset_reason = self.reset_reason, None
            return reason

    def cap_size(self, pages: int) -> None:
        """Let the database grow to at most ``pages`` pages: beyond it SQLite answers
        SQLITE_FULL exactly as on a full disk (tests; also a hard size limit)."""
        with self._reading() as db:
            db.execute(f"PRAGMA max_page_count={int(pages)}")

    def page_count(self) -> int:
        with self._reading() as db:
            return int(db.execute("PRAGMA page_count").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        """The connection under the lock, with SQLite errors translated."""
        with self._lock:
            try:
                yield self._db
            except sqlite3.Error as exc:
                raise _translate(exc, self.path) from exc

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One atomic unit of work (BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on error)."""
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    yield self._db
                    self._db.execute("COMMIT")
                except BaseException:
                    # SQLite may already have rolled back by itself (e.g. SQLITE_FULL).
                    if self._db.in_transaction:
                        self._db.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                raise _translate(exc, self.path) from exc

    # -- facts ------------------------------------------------------------------------
    def get(self, key: str, default: str | None = None) -> str | None:
        with self._reading() as db:
            row = db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
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

    # -- typed facts ----------------------------------------------------------------------
    def facts(self) -> Facts:
        """Every fact, typed (a value that cannot be read is treated as missing)."""
        with self._reading() as db:
            rows = db.execute(
                f"SELECT key, value FROM meta WHERE key IN ({', '.join('?' for _ in _FACT_KEYS)})",
                _FACT_KEYS,
            ).fetchall()
        stored = {str(r["key"]): r["value"] for r in rows if r["value"] is not None}
        error_type = stored.get("last_error_type")
        return Facts(
            deployed_version=_int(stored.get("deployed_version")),
            deployed_component_name=_str(stored.get("deployed_component_name")),
            deployed_component_version=_str(stored.get("deployed_component_version")),
            deployed_at=_float(stored.get("deployed_at")),
            deployed_lifecycle_state=_str(stored.get("deployed_lifecycle_state")),
            requested_version=_int(stored.get("requested_version")),
            last_check_at=_float(stored.get("last_check_at")),
            next_check_at=_float(stored.get("next_check_at")),
            last_error=None
            if not error_type
            else LastError(
                str(error_type), str(stored.get("last_error_message") or ""), _float(stored.get("last_error_at"))
            ),
            thing_arn=_str(stored.get("thing_arn")),
            halt_lifted_version=_int(stored.get("halt_lifted_version")),
            last_hint_at=_float(stored.get("last_hint_at")),
            hinted_version=_int(stored.get("hinted_version")),
            check_interval_factor=_float(stored.get("check_interval_factor")) or 1.0,
        )

    def update_facts(self, changes: FactChanges) -> None:
        """Set the facts ``changes`` names, in one transaction."""
        with self.transaction() as db:
            self._put(db, _encode(changes))

    def job_poll_due(self, rollout_id: int) -> float | None:
        """When rollout ``rollout_id`` next asks for its packaging job's status."""
        return _float(self.get(_job_poll_key(rollout_id)))

    # -- rollouts -----------------------------------------------------------------------
    def save(
        self,
        rollout: Rollout,
        messages: Sequence[OutgoingMessage] = (),
        facts: FactChanges | None = None,
        *,
        job_poll_due: float | Keep | None = KEEP,
    ) -> Rollout:
        """Insert or update ``rollout``, enqueue ``messages`` and set ``facts`` atomically.

        A new rollout gets its ``id`` assigned in place before ``messages`` render. A
        rollout that has ended forgets its job-status poll due-time.
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
            self._enqueue(db, messages, rollout.updated_at, self.epoch)
            if facts is not None:
                self._put(db, _encode(facts))
            key = _job_poll_key(rollout.id or 0)
            if rollout.phase.ended:
                db.execute("DELETE FROM meta WHERE key=?", (key,))
            elif job_poll_due is not KEEP:
                self._put(db, {key: None if job_poll_due is None else repr(job_poll_due)})
        return rollout

    def active_rollout(self) -> Rollout | None:
        """The newest rollout that has not ended, if any."""
        with self._reading() as db:
            row = db.execute(
                f"SELECT * FROM rollouts WHERE phase NOT IN ({_ENDED}) ORDER BY id DESC LIMIT 1",
                _ENDED_VALUES,
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
        with self._reading() as db:
            return [_rollout(r) for r in db.execute(sql, args).fetchall()]

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
                f"UPDATE rollouts SET next_action_at = next_action_at + ? WHERE phase NOT IN ({_ENDED})",
                (seconds, *_ENDED_VALUES),
            )
            db.execute(
                "UPDATE rollouts SET ended_at = ended_at + ? WHERE phase = ? AND ended_at IS NOT NULL",
                (seconds, Phase.FAILED.value),
            )

    def failed_deployment_ids(self) -> set[str]:
        """Deployments that a rollout of this device saw fail (never to be adopted)."""
        with self._reading() as db:
            rows = db.execute(
                "SELECT DISTINCT deployment_id FROM rollouts WHERE phase=? AND deployment_id IS NOT NULL",
                (Phase.FAILED.value,),
            ).fetchall()
        return {str(r["deployment_id"]) for r in rows}

    # -- outbox -------------------------------------------------------------------------
    def enqueue(self, messages: Sequence[OutgoingMessage], now: float) -> list[int]:
        with self.transaction() as db:
            return self._enqueue(db, messages, now, self.epoch)

    @staticmethod
    def _enqueue(
        db: sqlite3.Connection, messages: Sequence[OutgoingMessage], now: float, epoch: str
    ) -> list[int]:
        sequences = []
        for message in messages:
            cursor = db.execute(
                "INSERT INTO outbox(kind, topic, payload, retain, created_at) VALUES (?, ?, x'', ?, ?)",
                (message.kind, message.topic, int(message.retain), now),
            )
            sequence = int(cursor.lastrowid or 0)
            db.execute(
                "UPDATE outbox SET payload=? WHERE sequence=?", (message.render(sequence, epoch), sequence)
            )
            sequences.append(sequence)
        return sequences

    def pending(self, limit: int = 100) -> list[QueuedMessage]:
        """Unacknowledged messages, oldest first."""
        with self._reading() as db:
            rows = db.execute(
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
        with self._reading() as db:
            if kind is None:
                row = db.execute("SELECT COUNT(*) AS n FROM outbox").fetchone()
            else:
                row = db.execute(
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


def _prepare_state_dir(directory: Path) -> None:
    """Create the state directory owner-only (0700), or say why it cannot be used."""
    try:
        if not directory.exists():
            directory.mkdir(mode=0o700, parents=True)
    except OSError as exc:
        raise _state_dir_error(directory, exc.strerror or str(exc)) from exc
    if not directory.is_dir():
        raise _state_dir_error(directory, "it is not a directory")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise _state_dir_error(directory, "it is not writable")


def _state_dir_error(directory: Path, reason: str) -> errors.ConfigurationError:
    return errors.ConfigurationError(f"stateDir: {directory} cannot hold the ledger: {reason}")


_ENDED_VALUES = tuple(p.value for p in ENDED_PHASES)
_ENDED = ", ".join("?" for _ in _ENDED_VALUES)

#: Facts stored under a key of their own name; ``last_error`` spans three keys.
_FACT_KEYS = [
    "deployed_version", "deployed_component_name", "deployed_component_version", "deployed_at",
    "deployed_lifecycle_state", "requested_version", "last_check_at", "next_check_at",
    "last_error_type", "last_error_message", "last_error_at", "thing_arn", "check_interval_factor",
    "halt_lifted_version", "last_hint_at", "hinted_version",
]


def _job_poll_key(rollout_id: int) -> str:
    return f"job_poll_due:{rollout_id}"


def _encode(changes: FactChanges) -> dict[str, str | None]:
    """``changes`` as stored text (floats with repr, so they read back exactly). Clearing
    ``last_error`` clears its type and message and keeps when it happened."""
    encoded: dict[str, str | None] = {}
    for name, value in changes.items():
        if name == "last_error":
            if value is None:
                encoded.update(last_error_type=None, last_error_message=None)
            else:
                assert isinstance(value, LastError)
                encoded.update(last_error_type=value.type, last_error_message=value.message)
                if value.at is not None:
                    encoded["last_error_at"] = repr(float(value.at))
        elif value is None:
            encoded[name] = None
        elif isinstance(value, float):
            encoded[name] = repr(value)
        else:
            encoded[name] = str(value)
    return encoded


def _str(value: Any) -> str | None:
    return None if value is None or value == "" else str(value)


def _int(value: Any) -> int | None:
    try:
        return None if value is None or value == "" else int(value)
    except ValueError:
        return None


def _float(value: Any) -> float | None:
    try:
        return None if value is None or value == "" else float(value)
    except ValueError:
        return None


def _to_sql(value: Any) -> Any:
    if isinstance(value, Phase):
        return value.value
    return value


def _rollout(row: sqlite3.Row) -> Rollout:
    return Rollout.model_validate(dict(zip(row.keys(), tuple(row), strict=True)))
