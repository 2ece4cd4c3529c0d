"""The ledger as the SQLite adapter: epoch, permissions, unusable directories, corrupt
files and a database that cannot grow (SQLite's own max_page_count: SQLITE_FULL as on a
full disk, without root or a special file system)."""

from __future__ import annotations

import json
import re
import stat
from pathlib import Path

import pytest

from agent import errors
from agent.ledger import Ledger, OutgoingMessage
from agent.ports import FactChanges


def note(text: str) -> OutgoingMessage:
    def render(sequence: int, epoch: str) -> bytes:
        return json.dumps({"sequence": sequence, "epoch": epoch, "text": text}).encode()

    return OutgoingMessage("health", "t/health", render)


def test_a_new_ledger_has_an_epoch_that_every_message_carries(tmp_path: Path) -> None:
    """A ledger gets a random epoch when it is created and keeps it when reopened; a
    ledger created again (the file lost) starts sequences at 1 under another epoch."""
    path = tmp_path / "state" / "agent.sqlite"
    ledger = Ledger(path)
    assert re.fullmatch(r"[0-9a-f]{16}", ledger.epoch)
    assert ledger.take_reset_reason() == f"no ledger at {path}"
    assert ledger.take_reset_reason() is None
    ledger.enqueue([note("a"), note("b")], 0.0)
    first = [json.loads(m.payload) for m in ledger.pending()]
    assert [(m["sequence"], m["epoch"]) for m in first] == [(1, ledger.epoch), (2, ledger.epoch)]
    epoch = ledger.epoch
    ledger.close()
    again = Ledger(path)
    assert again.epoch == epoch and again.take_reset_reason() is None
    again.close()
    for leftover in path.parent.iterdir():
        leftover.unlink()
    fresh = Ledger(path)
    fresh.enqueue([note("c")], 0.0)
    (message,) = [json.loads(m.payload) for m in fresh.pending()]
    assert message["sequence"] == 1 and message["epoch"] != epoch
    fresh.close()


def test_state_dir_is_created_owner_only_and_the_database_too(tmp_path: Path) -> None:
    """stateDir is created 0700 and the database file 0600 (SQLite gives its WAL and
    shared-memory files the database's mode)."""
    path = tmp_path / "deep" / "state" / "agent.sqlite"
    ledger = Ledger(path)
    ledger.put({"k": "v"})
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    for name in ("agent.sqlite", "agent.sqlite-wal", "agent.sqlite-shm"):
        assert stat.S_IMODE((path.parent / name).stat().st_mode) == 0o600, name
    ledger.close()


@pytest.mark.parametrize(
    "state_dir",
    ["a-file", "a-file/below", "/proc/l4v-state"],
    ids=["is-a-file", "under-a-file", "under-proc"],
)
def test_an_unusable_state_dir_is_a_configuration_error(tmp_path: Path, state_dir: str) -> None:
    """A stateDir that is a file, lies under a file, or cannot be created (/proc) is a
    ConfigurationError naming stateDir, not a traceback."""
    (tmp_path / "a-file").write_text("not a directory")
    directory = Path(state_dir) if state_dir.startswith("/") else tmp_path / state_dir
    with pytest.raises(errors.ConfigurationError) as raised:
        Ledger(directory / "agent.sqlite")
    assert raised.value.message.startswith(f"stateDir: {directory} cannot hold the ledger: ")
    assert "\n" not in raised.value.message


def _damage_a_page(path: Path) -> None:
    """Overwrite the second page (a table's b-tree page) with garbage."""
    data = bytearray(path.read_bytes())
    page = int.from_bytes(data[16:18], "big") or 65536
    data[page : page * 2] = b"\xa5" * page
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", ["header", "page"])
def test_a_corrupt_ledger_is_moved_aside_and_a_new_one_started(tmp_path: Path, damage: str) -> None:
    """A ledger whose header ("file is not a database") or a table page ("malformed")
    is damaged is kept as agent.sqlite.corrupt-<time> and replaced by a new, empty one
    under a new epoch; the reason says it was corrupt and where it went."""
    path = tmp_path / "agent.sqlite"
    ledger = Ledger(path)
    ledger.put({f"k{n}": "x" * 200 for n in range(200)})
    ledger.enqueue([note(str(n)) for n in range(50)], 0.0)
    old_epoch = ledger.epoch
    ledger.close()
    if damage == "header":
        path.write_bytes(b"garbage!" * 512)
    else:
        _damage_a_page(path)
    fresh = Ledger(path)
    kept = sorted(tmp_path.glob("agent.sqlite.corrupt-*"))
    assert kept and kept[0].name.startswith("agent.sqlite.corrupt-")
    reason = fresh.take_reset_reason() or ""
    assert "corrupt" in reason and str(kept[0]) in reason
    assert fresh.epoch != old_epoch and fresh.outbox_depth() == 0
    fresh.close()


def test_a_ledger_that_cannot_grow_raises_a_transient_storage_error_and_recovers(tmp_path: Path) -> None:
    """With the database capped at its current size, writes fail with
    StateStorageError (SQLITE_FULL), reads go on, a failed write leaves no half
    transaction; when room returns (the cap raised, or acknowledged messages deleted),
    writes succeed again."""
    ledger = Ledger(tmp_path / "agent.sqlite")
    ledger.cap_size(ledger.page_count())
    with pytest.raises(errors.StateStorageError) as raised:
        for n in range(10_000):
            ledger.enqueue([note("x" * 1000 + str(n))], 0.0)
    assert isinstance(raised.value, errors.TransientError)
    assert "full" in raised.value.message
    depth = ledger.outbox_depth()
    for message in ledger.pending(limit=depth):
        ledger.ack(message.sequence)  # deleting still works and frees pages
    ledger.enqueue([note("after acks")], 0.0)
    ledger.cap_size(1_000_000)
    ledger.enqueue([note("y" * 1000) for _ in range(50)], 0.0)
    assert ledger.outbox_depth() == 51
    ledger.close()


def test_a_ledger_found_corrupt_while_running_is_replaced_in_place(tmp_path: Path) -> None:
    """When SQLite reports corruption during use, replace_corrupt keeps the file aside
    and swaps in a new database under the same Ledger object (every part of the agent
    keeps its reference): new epoch, empty outbox, the reason recorded."""
    path = tmp_path / "agent.sqlite"
    ledger = Ledger(path)
    ledger.take_reset_reason()
    ledger.enqueue([note("before")], 0.0)
    old_epoch = ledger.epoch
    kept = ledger.replace_corrupt(errors.LedgerCorruptError("database disk image is malformed"))
    assert Path(kept).exists() and Path(kept).name.startswith("agent.sqlite.corrupt-")
    assert ledger.epoch != old_epoch and ledger.outbox_depth() == 0
    assert "became corrupt" in (ledger.take_reset_reason() or "")
    ledger.enqueue([note("after")], 0.0)
    (message,) = [json.loads(m.payload) for m in ledger.pending()]
    assert (message["sequence"], message["epoch"]) == (1, ledger.epoch)
    ledger.close()


def test_plan_opens_the_ledger_read_only(tmp_path: Path) -> None:
    """A read-only ledger reads what is there and refuses writes (StateStorageError);
    with no file it is an empty ledger in memory and creates nothing."""
    path = tmp_path / "state" / "agent.sqlite"
    missing = Ledger(path, read_only=True)
    assert missing.facts().deployed_version is None and not path.parent.exists()
    missing.close()
    Ledger(path).close()
    writer = Ledger(path)
    writer.update_facts(FactChanges(deployed_version=3))
    writer.close()
    reader = Ledger(path, read_only=True)
    assert reader.facts().deployed_version == 3 and reader.epoch
    with pytest.raises(errors.StateStorageError):
        reader.update_facts(FactChanges(thing_arn="x"))
    reader.close()


def test_typed_facts_read_back_exactly_and_clear(tmp_path: Path) -> None:
    """Facts go in typed and come back typed (floats exactly); None clears one; clearing
    the last error keeps when it happened; a value that cannot be read is missing."""
    from agent.ports import Facts, LastError

    ledger = Ledger(tmp_path / "agent.sqlite")
    assert ledger.facts() == Facts()
    ledger.update_facts(FactChanges(
        deployed_version=3, deployed_at=1_790_000_000.123456789, next_check_at=0.1 + 0.2,
        last_error=LastError("ThrottledError", "slow down", 5.5), thing_arn="arn:x",
    ))
    facts = ledger.facts()
    assert (facts.deployed_version, facts.deployed_at, facts.next_check_at) == (3, 1_790_000_000.123456789, 0.1 + 0.2)
    assert facts.last_error == LastError("ThrottledError", "slow down", 5.5)
    ledger.update_facts(FactChanges(last_error=None, thing_arn=None))
    assert ledger.facts().last_error is None and ledger.facts().thing_arn is None
    assert ledger.get("last_error_at") == repr(5.5)
    ledger.put({"deployed_version": "not a number"})
    assert ledger.facts().deployed_version is None


def test_the_check_interval_factor_is_kept_and_defaults_to_one(tmp_path: Path) -> None:
    """The throttle adaptation's factor survives a restart; a missing or unreadable one
    reads as 1 (no stretch)."""
    ledger = Ledger(tmp_path / "agent.sqlite")
    assert ledger.facts().check_interval_factor == 1.0
    ledger.update_facts(FactChanges(check_interval_factor=0.8 * 0.8 * 16))
    ledger.close()
    again = Ledger(tmp_path / "agent.sqlite")
    assert again.facts().check_interval_factor == 0.8 * 0.8 * 16
    again.put({"check_interval_factor": "lots"})
    assert again.facts().check_interval_factor == 1.0


def test_a_rollout_forgets_its_job_poll_when_it_ends(tmp_path: Path) -> None:
    """The job-status poll due-time is stored with the rollout and deleted (not left
    behind) when the rollout ends."""
    from agent.rollout import Phase, Rollout

    ledger = Ledger(tmp_path / "agent.sqlite")
    rollout = ledger.save(
        Rollout(model_version=1, platform_key="p", phase=Phase.PACKAGING, next_action_at=1.0),
        job_poll_due=100.0,
    )
    assert rollout.id is not None and ledger.job_poll_due(rollout.id) == 100.0
    ledger.save(rollout)  # KEEP: unchanged
    assert ledger.job_poll_due(rollout.id) == 100.0
    ledger.save(rollout.model_copy(update={"phase": Phase.FAILED}))
    assert ledger.job_poll_due(rollout.id) is None
    assert ledger.get(f"job_poll_due:{rollout.id}") is None
