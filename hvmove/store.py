"""The store: move records and inventory snapshots in SQLAlchemy (SQLite by default, any URL).

The move record is the source of truth for which step a move has reached; each step also looks
at the host before it acts, so the record may lag behind without harm. Credentials never reach
the store: requests name hosts, and hosts hold references, not passwords.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    create_engine,
    func,
    inspect,
    select,
    text,
)
from sqlalchemy.engine import Engine
from sqlalchemy.orm import (
    DeclarativeBase,
    Mapped,
    Session,
    mapped_column,
    relationship,
    selectinload,
)
from sqlalchemy.types import TypeDecorator

STEPS = ("prechecks", "copy", "cutover", "verify", "cleanup")
OPEN_STATES = ("pending", "running", "failed")  # a rerun of the same move resumes these


def utcnow() -> datetime:
    return datetime.now(UTC)


class UtcDateTime(TypeDecorator[datetime]):
    """Times go in and come out as UTC on every backend: SQLite keeps no offset, so a naive value
    is taken as UTC and an aware one is converted before it is stored."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    pass


class MoveRecord(Base):
    __tablename__ = "moves"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    host: Mapped[str] = mapped_column(String(255), index=True)
    vm_id: Mapped[str] = mapped_column(String(64), index=True)
    vm_name: Mapped[str] = mapped_column(String(255))
    mode: Mapped[str] = mapped_column(String(16))
    destination: Mapped[str] = mapped_column(Text, default="")
    request: Mapped[dict[str, Any]] = mapped_column(JSON)
    batch: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    status: Mapped[str] = mapped_column(String(16), default="pending", index=True)
    last_step: Mapped[str | None] = mapped_column(String(16), nullable=True)
    reason: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    source_volume: Mapped[str] = mapped_column(String(255), default="")
    destination_volume: Mapped[str] = mapped_column(String(255), default="")
    bytes_total: Mapped[int] = mapped_column(BigInteger, default=0)
    copy_seconds: Mapped[float | None] = mapped_column(Float, nullable=True)
    estimated_seconds: Mapped[float | None] = mapped_column(Float, nullable=True)
    measured_mbps: Mapped[float | None] = mapped_column(Float, nullable=True)
    odx: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    job_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    verified: Mapped[bool] = mapped_column(Boolean, default=False)
    source_removed: Mapped[bool] = mapped_column(Boolean, default=False)
    flow_run_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    precheck: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    before: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    verification: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    cleanup: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)

    steps: Mapped[list[StepRecord]] = relationship(back_populates="move", order_by="StepRecord.id")


class StepRecord(Base):
    __tablename__ = "move_steps"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    move_id: Mapped[str] = mapped_column(ForeignKey("moves.id"), index=True)
    step: Mapped[str] = mapped_column(String(16))
    state: Mapped[str] = mapped_column(String(16))  # running | completed | failed | skipped
    started_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    ended_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    detail: Mapped[str] = mapped_column(Text, default="")

    move: Mapped[MoveRecord] = relationship(back_populates="steps")


class ThroughputSample(Base):
    __tablename__ = "throughput_samples"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    move_id: Mapped[str] = mapped_column(ForeignKey("moves.id"), index=True)
    at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    percent: Mapped[int] = mapped_column(Integer)
    bytes_done: Mapped[int] = mapped_column(BigInteger)
    mbps: Mapped[float | None] = mapped_column(Float, nullable=True)
    # copies sharing this move's volumes when the sample was taken, itself included: a rate is a
    # share of the volumes, and the planner learns the rate alone from it (hvmove.throughput)
    concurrent: Mapped[int | None] = mapped_column(Integer, nullable=True)


@dataclass(slots=True)
class CopyProgress:
    """One move's copy as the store last saw it (``Store.night_copies``)."""

    began: datetime | None = None
    over: bool = False  # its copy step ended (completed, failed or skipped)
    percent: int | None = None  # at its newest sample; None before the first


class Snapshot(Base):
    __tablename__ = "snapshots"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    taken_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow, index=True)
    source: Mapped[str] = mapped_column(String(32), default="inventory")


class VolumeSnapshot(Base):
    __tablename__ = "volume_snapshots"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    snapshot_id: Mapped[int] = mapped_column(ForeignKey("snapshots.id"), index=True)
    host: Mapped[str] = mapped_column(String(255))
    volume: Mapped[str] = mapped_column(String(255))
    kind: Mapped[str] = mapped_column(String(16))
    capacity: Mapped[int] = mapped_column(BigInteger)
    free: Mapped[int] = mapped_column(BigInteger)
    # the failover cluster of the reporting host: a CSV is one volume per cluster
    cluster: Mapped[str | None] = mapped_column(String(255), nullable=True)


class VMSnapshot(Base):
    __tablename__ = "vm_snapshots"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    snapshot_id: Mapped[int] = mapped_column(ForeignKey("snapshots.id"), index=True)
    host: Mapped[str] = mapped_column(String(255))
    vm_id: Mapped[str] = mapped_column(String(64))
    vm_name: Mapped[str] = mapped_column(String(255))
    state: Mapped[str] = mapped_column(String(16))
    volume: Mapped[str] = mapped_column(String(255))
    file_bytes: Mapped[int] = mapped_column(BigInteger)
    virtual_bytes: Mapped[int] = mapped_column(BigInteger)


class DiskSnapshot(Base):
    __tablename__ = "disk_snapshots"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    snapshot_id: Mapped[int] = mapped_column(ForeignKey("snapshots.id"), index=True)
    host: Mapped[str] = mapped_column(String(255))
    vm_id: Mapped[str] = mapped_column(String(64))
    path: Mapped[str] = mapped_column(Text)
    volume: Mapped[str] = mapped_column(String(255))
    type: Mapped[str] = mapped_column(String(16))
    file_size: Mapped[int] = mapped_column(BigInteger)
    size: Mapped[int] = mapped_column(BigInteger)


class Store:
    def __init__(self, url: str) -> None:
        self.url = url
        kwargs: dict[str, Any] = {}
        if url.startswith("sqlite"):
            # flows, tasks and the CLI share one file from several threads
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
        self.engine: Engine = create_engine(url, **kwargs)
        Base.metadata.create_all(self.engine)
        _add_missing_columns(self.engine)

    @contextmanager
    def session(self) -> Iterator[Session]:
        with Session(self.engine, expire_on_commit=False) as s, s.begin():
            yield s

    # -- moves -----------------------------------------------------------------------------------
    def open_move(
        self,
        *,
        host: str,
        vm_id: str,
        vm_name: str,
        request: dict[str, Any],
        batch: str | None = None,
    ) -> MoveRecord:
        """The unfinished record of this VM's move with the same request, or a new one."""
        with self.session() as s:
            existing = s.scalars(
                select(MoveRecord)
                .where(
                    MoveRecord.host == host,
                    MoveRecord.vm_id == vm_id,
                    MoveRecord.status.in_(OPEN_STATES),
                )
                .order_by(MoveRecord.created_at.desc())
            ).first()
            if existing is not None and _same_target(existing.request, request):
                return existing
            record = MoveRecord(
                id=str(uuid.uuid4()),
                host=host,
                vm_id=vm_id,
                vm_name=vm_name,
                mode=request.get("mode", "all"),
                destination=_destination(request),
                request=request,
                batch=batch,
                status="pending",
            )
            s.add(record)
            return record

    def get(self, move_id: str) -> MoveRecord:
        with self.session() as s:
            record = s.get(MoveRecord, move_id)
            if record is None:
                raise KeyError(move_id)
            s.refresh(record)
            _ = record.steps  # load while the session is open
            return record

    def update(self, move_id: str, **fields: Any) -> None:
        # setattr would quietly keep a misspelt field on the object and store nothing (a lost
        # job_id breaks resume): only the record's columns are accepted
        unknown = sorted(set(fields) - set(MoveRecord.__table__.columns.keys()))
        if unknown:
            raise TypeError(f"a move record has no field(s) {', '.join(unknown)}")
        with self.session() as s:
            record = s.get(MoveRecord, move_id)
            if record is None:
                raise KeyError(move_id)
            for key, value in fields.items():
                setattr(record, key, value)

    def step_started(self, move_id: str, step: str) -> None:
        with self.session() as s:
            s.add(StepRecord(move_id=move_id, step=step, state="running"))
            record = s.get(MoveRecord, move_id)
            if record is not None:
                record.status = "running"
                record.started_at = record.started_at or utcnow()

    def step_ended(self, move_id: str, step: str, state: str, detail: str = "") -> None:
        with self.session() as s:
            row = s.scalars(
                select(StepRecord)
                .where(StepRecord.move_id == move_id, StepRecord.step == step)
                .order_by(StepRecord.id.desc())
            ).first()
            if row is None or row.state != "running":
                row = StepRecord(move_id=move_id, step=step, state=state)
                s.add(row)
            row.state, row.ended_at, row.detail = state, utcnow(), detail
            record = s.get(MoveRecord, move_id)
            if record is not None and state in ("completed", "skipped"):
                record.last_step = step

    def finish(self, move_id: str, status: str, reason: str = "") -> None:
        self.update(move_id, status=status, reason=reason, finished_at=utcnow())

    def add_sample(
        self,
        move_id: str,
        percent: int,
        bytes_done: int,
        mbps: float | None,
        concurrent: int | None = None,
    ) -> None:
        with self.session() as s:
            s.add(
                ThroughputSample(
                    move_id=move_id,
                    percent=percent,
                    bytes_done=bytes_done,
                    mbps=mbps,
                    concurrent=concurrent,
                )
            )

    def night_copies(self, batch: str) -> dict[tuple[str, str], CopyProgress]:
        """The copies of one batch's moves, by (host in lower case, VM id): when each began, whether
        it is over, and its newest sample. Only this batch's records: a VM's older moves (earlier
        nights) must not pass for tonight's, whose record its run creates a moment after it starts.
        """
        with self.session() as s:
            records = {
                r.id: (r.host.lower(), r.vm_id)
                for r in s.scalars(select(MoveRecord).where(MoveRecord.batch == batch))
            }
            if not records:
                return {}
            out = {key: CopyProgress() for key in records.values()}
            steps = s.scalars(
                select(StepRecord)
                .where(StepRecord.move_id.in_(records), StepRecord.step == "copy")
                .order_by(StepRecord.id)
            )
            for row in steps:  # the newest row of a step is its state (a resumed copy adds one)
                cp = out[records[row.move_id]]
                cp.began = cp.began or row.started_at
                cp.over = row.state != "running"
            newest = (
                select(func.max(ThroughputSample.id))
                .where(ThroughputSample.move_id.in_(records))
                .group_by(ThroughputSample.move_id)
            )
            samples = select(ThroughputSample).where(ThroughputSample.id.in_(newest))
            for sample in s.scalars(samples):
                out[records[sample.move_id]].percent = sample.percent
            return out

    def copies_over(self, batch: str) -> int:
        """How many copy steps of one batch's moves have ended (one cheap count: the night asks it
        several times a second, to re-plan as soon as a copy frees its share)."""
        with self.session() as s:
            return (
                s.scalar(
                    select(func.count())
                    .select_from(StepRecord)
                    .join(MoveRecord, StepRecord.move_id == MoveRecord.id)
                    .where(
                        MoveRecord.batch == batch,
                        StepRecord.step == "copy",
                        StepRecord.state != "running",
                    )
                )
                or 0
            )

    def copies_sharing(self, move_id: str) -> int:
        """Moves copying now (copy step running) that share a source or destination volume with
        this one, itself included."""
        with self.session() as s:
            me = s.get(MoveRecord, move_id)
            if me is None:
                return 0
            vols = {v for v in (me.source_volume, me.destination_volume) if v}
            copying = (
                select(func.count(func.distinct(MoveRecord.id)))
                .join(StepRecord, StepRecord.move_id == MoveRecord.id)
                .where(StepRecord.step == "copy", StepRecord.state == "running")
                .where(
                    (MoveRecord.id == move_id)
                    | MoveRecord.source_volume.in_(vols)
                    | MoveRecord.destination_volume.in_(vols)
                )
            )
            return max(1, int(s.scalar(copying) or 0))

    def moves(self, limit: int | None = None) -> list[MoveRecord]:
        with self.session() as s:
            # the steps come in one more query for all rows, not one per move
            q = (
                select(MoveRecord)
                .options(selectinload(MoveRecord.steps))
                .order_by(MoveRecord.created_at.desc())
            )
            if limit:
                q = q.limit(limit)
            return list(s.scalars(q))

    def latest(self, host: str, vm_id: str) -> MoveRecord | None:
        """The newest move record of one VM on one host."""
        with self.session() as s:
            return s.scalars(
                select(MoveRecord)
                .where(func.lower(MoveRecord.host) == host.lower(), MoveRecord.vm_id == vm_id)
                .order_by(MoveRecord.created_at.desc())
            ).first()

    def step_states(self, move_id: str) -> dict[str, str]:
        """Final state of each step (the newest row per step); for a record that `moves()`
        loaded, `loaded_step_states(record)` gives the same without a query."""
        states: dict[str, str] = {}
        with self.session() as s:
            for row in s.scalars(
                select(StepRecord).where(StepRecord.move_id == move_id).order_by(StepRecord.id)
            ):
                states[row.step] = row.state
        return states


# Columns added after a store was first created: create_all() makes missing tables, never
# missing columns, so an older store gets them here (each nullable, so old rows stay valid).
_ADDED_COLUMNS = {
    "volume_snapshots": {"cluster": "VARCHAR(255)"},
    "throughput_samples": {"concurrent": "INTEGER"},
}


def _add_missing_columns(engine: Engine) -> None:
    have = inspect(engine)
    for table, columns in _ADDED_COLUMNS.items():
        present = {c["name"] for c in have.get_columns(table)}
        for name, sql_type in columns.items():
            if name not in present:
                with engine.begin() as conn:
                    conn.execute(text(f"ALTER TABLE {table} ADD COLUMN {name} {sql_type}"))


def _destination(request: dict[str, Any]) -> str:
    if request.get("mode", "all") == "all":
        return str(request.get("destination") or "")
    if request.get("virtual_machine_path"):
        return str(request["virtual_machine_path"])
    vhds = request.get("vhds") or []
    return str(vhds[0]["destination"]) if vhds else ""


def _same_target(a: dict[str, Any], b: dict[str, Any]) -> bool:
    keys = (
        "mode",
        "destination",
        "virtual_machine_path",
        "snapshot_file_path",
        "smart_paging_file_path",
        "vhds",
    )
    return (
        json.dumps([a.get(k) for k in keys], sort_keys=True).lower()
        == json.dumps([b.get(k) for k in keys], sort_keys=True).lower()
    )


def loaded_step_states(r: MoveRecord) -> dict[str, str]:
    """`Store.step_states` of a record whose steps `Store.moves()` loaded with it."""
    return {row.step: row.state for row in r.steps}  # ordered by id: the newest row wins


def record_as_dict(r: MoveRecord, steps: dict[str, str] | None = None) -> dict[str, Any]:
    """A move as history exports it (no secrets exist in the record to leave out)."""
    return {
        "id": r.id,
        "host": r.host,
        "vm": r.vm_name,
        "vm_id": r.vm_id,
        "mode": r.mode,
        "destination": r.destination,
        "batch": r.batch,
        "status": r.status,
        "last_step": r.last_step,
        "reason": r.reason,
        "created_at": r.created_at.isoformat() if r.created_at else None,
        "started_at": r.started_at.isoformat() if r.started_at else None,
        "finished_at": r.finished_at.isoformat() if r.finished_at else None,
        "source_volume": r.source_volume,
        "destination_volume": r.destination_volume,
        "bytes": r.bytes_total,
        "copy_seconds": r.copy_seconds,
        "estimated_seconds": r.estimated_seconds,
        "measured_mbps": r.measured_mbps,
        "odx": r.odx,
        "verified": r.verified,
        "source_removed": r.source_removed,
        "flow_run_id": r.flow_run_id,
        "blockers": [
            c["name"] for c in (r.precheck or {}).get("checks", []) if c.get("status") == "fail"
        ]
        if r.status == "blocked"
        else [],
        "steps": steps or {},
    }
