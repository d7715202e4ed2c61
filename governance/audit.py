"""The tamper-evident audit log: append, verify, checkpoint and export.

Every governance action, ingest, refresh and role change appends one event. Each event stores its
payload (canonical JSON), the payload's SHA-256, the hash of the event before it (64 zeros for the first)
and its own SHA-256 over the canonical JSON of seq, time, actor, role, action, payload_hash and
prev_hash. Changing, removing, adding or reordering an event therefore breaks a hash or a link that
``verify`` finds, and it names the first event where the chain stops being sound.

What a hash chain alone cannot catch: someone who can write the warehouse can cut events off the end,
or recompute the whole chain after an edit. A checkpoint (head seq and hash) kept OUTSIDE the warehouse
closes that gap: ``verify`` against it reports a log that no longer extends it. Forged events appended
after the newest checkpoint stay undetectable until they are compared with an outside record, which is
why checkpoints should be taken often and stored where the warehouse's writers cannot reach.

The caller owns the transaction: an event is written inside the transaction of the action it records,
so the two commit or roll back together.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import duckdb
import pyarrow.csv as pa_csv
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, computed_field
from pydantic_core import to_jsonable_python

from queries import audit_store as store
from queries.errors import LabelgovError

GENESIS_HASH = store.GENESIS_HASH

# Names in the hashed fields may not hold control characters: they are the one place where DuckDB's
# JSON writer and Python's json.dumps escape differently, and the canonical form must be reproducible.
_NAME_PATTERN = r"^[^\x00-\x20\x7f]([^\x00-\x1f\x7f]*[^\x00-\x20\x7f])?$"
Name = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=_NAME_PATTERN)]
Action = Annotated[str, StringConstraints(max_length=64, pattern=r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*$")]
# Bounds the search for the original seq of a moved event, whatever seq numbers a tamperer wrote.
MAX_SEQ_SEARCH = 10_000_000
ExportFormat = Literal["jsonl", "csv"]
FaultKind = Literal["altered", "deleted", "inserted", "reordered", "truncated", "rewritten"]


class AuditEvent(BaseModel):
    """One stored event, as an auditor reads it."""

    model_config = ConfigDict(frozen=True)

    seq: int
    time: datetime
    actor: str
    role: str
    action: str
    payload: dict[str, Any]
    payload_hash: str
    prev_hash: str
    hash: str

    @classmethod
    def from_row(cls, row: tuple[Any, ...]) -> AuditEvent:
        seq, time, actor, role, action, payload, payload_hash, prev_hash, event_hash = row
        return cls(
            seq=seq, time=time.replace(tzinfo=UTC), actor=actor, role=role, action=action,
            payload=json.loads(payload), payload_hash=payload_hash, prev_hash=prev_hash, hash=event_hash,
        )


class Checkpoint(BaseModel):
    """The head of the log at one moment, to be kept outside the warehouse."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    seq: int = Field(ge=0)
    hash: str = Field(pattern=r"^[0-9a-f]{64}$")
    time: datetime


class Fault(BaseModel):
    """The first place where the log stops being sound; ``seq`` is the first bad (or missing) event."""

    kind: FaultKind
    seq: int
    detail: str


class VerifyResult(BaseModel):
    events: int
    head_seq: int
    head_hash: str
    fault: Fault | None = None

    @computed_field  # type: ignore[prop-decorator]
    @property
    def ok(self) -> bool:
        return self.fault is None

    @property
    def message(self) -> str:
        if self.fault is None:
            return f"audit log verified: {self.events} events, head seq {self.head_seq} hash {self.head_hash}"
        return f"audit log FAILED verification at seq {self.fault.seq} ({self.fault.kind}): {self.fault.detail}"


class _EventFields(BaseModel):
    actor: Name
    role: Name
    action: Action


def canonical_json(value: Any) -> str:
    """Sorted keys, no whitespace, UTF-8 kept as is: the form whose SHA-256 is stored."""
    return json.dumps(
        to_jsonable_python(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )


def append_event(
    con: duckdb.DuckDBPyConnection, *, actor: str, role: str, action: str, payload: dict[str, Any]
) -> AuditEvent:
    """Append inside the caller's open transaction; seq and prev_hash are read in that transaction."""
    try:
        fields = _EventFields(actor=actor, role=role, action=action)
    except ValidationError as exc:
        error = exc.errors()[0]
        raise LabelgovError(
            f"audit event {error['loc'][0]} {error['input']!r} is not allowed: names are 1-128 characters "
            "without control characters or surrounding spaces; actions are dotted lower-case words "
            "such as 'proposal.approve'"
        ) from exc
    if not store.in_transaction(con):
        raise RuntimeError("append_event must run inside the transaction of the action it records")
    row = store.append(
        con,
        time=datetime.now(UTC).replace(tzinfo=None),
        actor=fields.actor,
        role=fields.role,
        action=fields.action,
        payload_json=canonical_json(payload),
    )
    return AuditEvent.from_row(row)


# Ingest and refresh record their events through this name; it is the same operation.
record = append_event


def recent_events(con: duckdb.DuckDBPyConnection, limit: int = 20) -> list[AuditEvent]:
    """The newest events, oldest first, for `labelgov audit show` and the dashboard."""
    store.require_tables(con)
    return [AuditEvent.from_row(row) for row in store.recent(con, limit)]


def _events(first: int, last: int) -> str:
    return f"event {first} is" if first == last else f"events {first}..{last} are"


def _chain_fault(con: duckdb.DuckDBPyConnection, events: int, head_seq: int) -> Fault | None:
    """Classify the first unsound row: seq problems first, since they also break that row's hash or link."""
    row = store.first_fault(con)
    if row is None:
        return None
    seq, before = row["seq"], row["before_seq"]
    if seq is None or seq <= before:
        where = before + 1 if seq is None else seq
        return Fault(kind="inserted", seq=where, detail=f"more than one event claims seq {where}")
    if seq > before + 1:
        return Fault(kind="deleted", seq=before + 1, detail=f"{_events(before + 1, seq - 1)} missing")
    if not row["payload_ok"]:
        return Fault(kind="altered", seq=seq, detail="its payload does not match its payload hash (payload edited)")
    if not row["hash_ok"]:
        return _moved_or_altered(con, row, upper=min(max(head_seq, events) + events + 2, MAX_SEQ_SEARCH))
    return Fault(
        kind="inserted",
        seq=seq,
        detail=f"its prev_hash is not the hash of event {before}: event {seq} was inserted "
        f"(or event {before} was rewritten with a recomputed hash)",
    )


def _moved_or_altered(con: duckdb.DuckDBPyConnection, row: dict[str, Any], upper: int) -> Fault:
    """An intact event at the wrong seq was moved; recovering its original seq tells how."""
    seq = row["seq"]
    original = store.original_seq(con, row["row_id"], upper)
    if original is None:
        return Fault(
            kind="altered",
            seq=seq,
            detail="its hash does not match its fields (time, actor, role, action, payload hash or prev hash "
            "was changed)",
        )
    moved = f"the event now at seq {seq} was recorded as seq {original}"
    if original < seq:
        inserted = seq - original
        return Fault(kind="inserted", seq=original, detail=f"{moved}: {inserted} event(s) were inserted before it")
    if store.hash_appears_after(con, row["prev_hash"], seq):
        return Fault(kind="reordered", seq=seq, detail=f"{moved} and the event it follows now sits later in the log")
    return Fault(kind="deleted", seq=seq, detail=f"{moved}: events were deleted and later ones renumbered")


def _checkpoint_fault(con: duckdb.DuckDBPyConnection, checkpoint: Checkpoint, head_seq: int) -> Fault | None:
    when = checkpoint.time.strftime("%Y-%m-%dT%H:%M:%SZ")
    if checkpoint.seq > head_seq:
        return Fault(
            kind="truncated",
            seq=head_seq + 1,
            detail=f"the checkpoint of {when} saw the log up to seq {checkpoint.seq} but it now ends at seq "
            f"{head_seq}: {_events(head_seq + 1, checkpoint.seq)} gone",
        )
    found = store.hashes_at(con, checkpoint.seq) if checkpoint.seq else [GENESIS_HASH]
    if checkpoint.hash in found:
        return None
    return Fault(
        kind="rewritten",
        seq=checkpoint.seq,
        detail=f"event {checkpoint.seq} no longer has the hash {checkpoint.hash[:16]}… recorded by the checkpoint "
        f"of {when}: the log was rewritten at or before seq {checkpoint.seq}",
    )


def verify(con: duckdb.DuckDBPyConnection, checkpoints: list[Checkpoint] | None = None) -> VerifyResult:
    """Check every hash and link, then that the log still extends each checkpoint; report the earliest fault."""
    store.require_tables(con)
    events, head_seq, head_hash = store.head(con)
    faults = [_chain_fault(con, events, head_seq)]
    faults += [_checkpoint_fault(con, cp, head_seq) for cp in checkpoints or []]
    found = [f for f in faults if f is not None]
    first = min(found, key=lambda f: f.seq) if found else None
    return VerifyResult(events=events, head_seq=head_seq, head_hash=head_hash, fault=first)


def checkpoint(con: duckdb.DuckDBPyConnection) -> Checkpoint:
    """The current head, refused for a log that already fails: a checkpoint must vouch for a sound chain."""
    result = verify(con)
    if not result.ok:
        raise LabelgovError(f"not checkpointing a log that fails verification: {result.message}")
    return Checkpoint(seq=result.head_seq, hash=result.head_hash, time=datetime.now(UTC))


def write_checkpoint(point: Checkpoint, path: str | Path) -> None:
    try:
        Path(path).write_text(point.model_dump_json() + "\n", encoding="utf-8")
    except OSError as exc:
        raise LabelgovError(f"cannot write checkpoint {path}: {exc.strerror}") from exc


def read_checkpoint(path: str | Path) -> Checkpoint:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise LabelgovError(f"cannot read checkpoint {path}: {exc.strerror}") from exc
    try:
        return Checkpoint.model_validate_json(text)
    except ValidationError as exc:
        raise LabelgovError(
            f"{path} is not an audit checkpoint (expected JSON with seq, hash and time written by "
            f"`labelgov audit checkpoint`): {exc.errors()[0]['msg']}"
        ) from exc


def export(con: duckdb.DuckDBPyConnection, path: str | Path, fmt: ExportFormat = "jsonl") -> int:
    """Write every event in seq order; JSON lines embed the payload, CSV keeps it as JSON text."""
    if fmt not in ("jsonl", "csv"):
        raise LabelgovError(f"unknown export format {fmt!r}: use jsonl or csv")
    store.require_tables(con)
    try:
        if fmt == "csv":
            table = store.events_table(con)
            pa_csv.write_csv(table, str(path))
            return table.num_rows
        lines = store.events_as_json_lines(con)
        Path(path).write_text("".join(line + "\n" for line in lines), encoding="utf-8")
        return len(lines)
    except OSError as exc:
        raise LabelgovError(f"cannot write {path}: {exc.strerror or exc}") from exc
