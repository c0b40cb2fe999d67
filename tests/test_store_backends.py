"""The store round trip on every backend: SQLite always, PostgreSQL when HVMOVE_TEST_POSTGRES_URL
names one (`.ci/postgres.sh` prints such a URL). Each PostgreSQL test works in a schema of its own
that is dropped afterwards, so the database may be shared and is never clobbered."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from hvmove import analysis, models
from hvmove.inventory import HostInventory
from hvmove.lab.history import generate_history
from hvmove.snapshots import record_snapshot
from hvmove.store import Store

GiB = 1024**3
PG_ENV = "HVMOVE_TEST_POSTGRES_URL"


@pytest.fixture(
    params=[
        "sqlite",
        pytest.param(
            "postgresql",
            marks=pytest.mark.skipif(
                not os.environ.get(PG_ENV),
                reason=f"{PG_ENV} is not set (CI sets it from .ci/postgres.sh)",
            ),
        ),
    ]
)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'store.db'}"
        return
    base = make_url(os.environ[PG_ENV])
    schema = f"hvmove_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(base)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        # every connection of the store under test sees only its own schema
        yield base.update_query_dict({"options": f"-csearch_path={schema}"}).render_as_string(
            hide_password=False
        )
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    s = Store(store_url)
    yield s
    s.engine.dispose()


def request_for(destination: str) -> dict[str, object]:
    return models.MoveRequest(host="hv01", vm="web01", destination=destination).model_dump(
        mode="json"
    )


def test_move_record_steps_and_samples_round_trip(store: Store) -> None:
    rec = store.open_move(
        host="hv01", vm_id="vm-1", vm_name="web01", request=request_for("E:\\VMs\\web01")
    )
    # the same request reopens the unfinished record instead of starting a second move
    again = store.open_move(
        host="hv01", vm_id="vm-1", vm_name="web01", request=request_for("e:\\vms\\WEB01")
    )
    assert again.id == rec.id
    for step in ("prechecks", "copy"):
        store.step_started(rec.id, step)
        store.step_ended(rec.id, step, "completed", detail=f"{step} ok")
    store.add_sample(rec.id, 50, 60 * GiB, 400.0)
    store.add_sample(rec.id, 100, 120 * GiB, None)
    size = 5 * 1024**4  # beyond 32 bits: BigInteger on every backend
    store.update(
        rec.id,
        source_volume="D:\\",
        destination_volume="E:\\",
        bytes_total=size,
        copy_seconds=500.0,
        estimated_seconds=400.0,
        measured_mbps=420.0,
        odx=False,
        precheck={"checks": [{"name": "space", "status": "pass"}]},
    )
    store.finish(rec.id, "completed")

    got = store.get(rec.id)
    assert got.status == "completed" and got.last_step == "copy"
    assert [s.step for s in got.steps] == ["prechecks", "copy"]
    assert got.precheck == {"checks": [{"name": "space", "status": "pass"}]}
    assert store.step_states(rec.id) == {"prechecks": "completed", "copy": "completed"}
    assert [m.id for m in store.moves()] == [rec.id]
    other = store.open_move(
        host="hv01", vm_id="vm-1", vm_name="web01", request=request_for("F:\\VMs\\web01")
    )
    assert other.id != rec.id  # a finished move is never reopened
    assert len(store.moves(limit=1)) == 1

    mv = analysis.moves(store).set_index("id")
    row = mv.loc[rec.id]
    assert row["bytes"] == size
    assert row["throughput"] == pytest.approx(size / 500.0)
    assert not row["odx"]
    assert str(mv["started_at"].dt.tz) == "UTC"
    assert abs(row["started_at"] - pd.Timestamp.now(tz="UTC")) < pd.Timedelta(minutes=5)
    samples = analysis.throughput_samples(store)
    assert list(samples["percent"]) == [50, 100]
    assert samples["mbps"].isna().tolist() == [False, True]


def test_snapshots_round_trip_with_big_sizes_and_offsets(store: Store) -> None:
    def host(free: int) -> HostInventory:
        return HostInventory(
            name="hv01",
            volumes=[
                models.VolumeInfo(
                    path="\\\\fs01\\vmstore\\",
                    exists=True,
                    volume="\\\\fs01\\vmstore\\",
                    kind="smb",
                    file_system="SMB",
                    capacity=8 * 1024**4,
                    free=free,
                )
            ],
        )

    plus_two = timezone(timedelta(hours=2))
    first = record_snapshot(
        store, [host(5 * 1024**4)], taken_at=datetime(2026, 1, 1, 12, 0, tzinfo=plus_two)
    )
    second = record_snapshot(store, [host(4 * 1024**4)], source="test")
    assert second > first
    vf = analysis.volume_fill(store)
    assert list(vf["snapshot_id"]) == [first, second]
    # stored as UTC on every backend, whatever the offset it was given with
    assert vf["taken_at"].iloc[0] == pd.Timestamp("2026-01-01 10:00", tz="UTC")
    assert list(vf["used"]) == [3 * 1024**4, 4 * 1024**4]
    assert analysis.latest(vf)["snapshot_id"].tolist() == [second]


def test_generated_history_and_analysis_on_the_backend(store_url: str) -> None:
    end = datetime(2026, 3, 2, 6, tzinfo=UTC)
    summary = generate_history(store_url, days=12, seed=7, end=end)
    store = Store(store_url)
    try:
        vf = analysis.volume_fill(store)
        assert vf["snapshot_id"].nunique() == 12
        assert vf["taken_at"].max() == pd.Timestamp(end)
        assert len(analysis.moves(store)) == summary["moves"]
        assert not analysis.throughput_samples(store).empty
        assert not analysis.disks(store).empty
        fc = analysis.forecast_fill(vf)
        assert (fc["status"] == "above").any()
        p = analysis.rebalance(
            analysis.latest(vf),
            analysis.latest(analysis.vm_growth(store)),
            disks=analysis.latest(analysis.disks(store)),
            forecast=fc,
        )
        assert len(p) >= 1
    finally:
        store.engine.dispose()
