"""Capacity analysis: loaders, forecast, throughput, ETA accuracy and rebalancing, on a generated
store and on small hand-made frames whose right answer is known."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from pathlib import Path

import matplotlib
import pandas as pd
import pytest

from hvmove import analysis, models
from hvmove.inventory import HostInventory
from hvmove.lab.history import generate_history
from hvmove.snapshots import record_snapshot, volume_for
from hvmove.store import Store

matplotlib.use("Agg")

GiB = 1024**3
END = datetime(2026, 3, 2, 6, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Store:
    url = f"sqlite:///{tmp_path_factory.mktemp('history') / 'h.db'}"
    generate_history(url, days=60, seed=7, end=END)
    return Store(url)


# -- hand-made frames ------------------------------------------------------------------------------


def fill_frame(series: dict[tuple[str, str, str], list[float]], capacity: int = 1000 * GiB):
    """volume_fill rows from used-percent series, one a day ending at END."""
    rows = []
    for (host, volume, kind), pcts in series.items():
        for day, pct in enumerate(pcts):
            used = int(capacity * pct / 100)
            rows.append(
                {
                    "taken_at": END - timedelta(days=len(pcts) - 1 - day),
                    "snapshot_id": day + 1,
                    "host": host,
                    "volume": volume,
                    "kind": kind,
                    "capacity": capacity,
                    "free": capacity - used,
                    "used": used,
                    "used_pct": 100 * used / capacity,
                }
            )
    df = pd.DataFrame(rows)
    df["taken_at"] = pd.to_datetime(df["taken_at"], utc=True)
    return df


def volumes_frame(rows: list[tuple[str, str, str, int, float]]) -> pd.DataFrame:
    """(host, volume, kind, capacity GiB, used %) -> newest volume_fill rows."""
    out = []
    for host, volume, kind, cap_gib, pct in rows:
        cap = cap_gib * GiB
        out.append(
            {
                "snapshot_id": 1,
                "host": host,
                "volume": volume,
                "kind": kind,
                "capacity": cap,
                "free": cap - int(cap * pct / 100),
            }
        )
    return pd.DataFrame(out)


def vms_frame(rows: list[tuple[str, str, str, float]]) -> pd.DataFrame:
    """(host, name, volume, GiB) -> newest vm_growth rows."""
    return pd.DataFrame(
        [
            {
                "snapshot_id": 1,
                "host": host,
                "vm_id": f"id-{host}-{name}",
                "vm_name": name,
                "volume": volume,
                "file_bytes": int(gib * GiB),
            }
            for host, name, volume, gib in rows
        ]
    )


# -- snapshots -------------------------------------------------------------------------------------


def test_volume_for_takes_the_longest_root_and_falls_back_to_the_anchor() -> None:
    roots = ["C:\\", "C:\\ClusterStorage\\Volume1\\", "\\\\fs01\\vmstore\\"]
    assert volume_for("c:\\clusterstorage\\volume1\\VMs\\a", roots) == roots[1]
    assert volume_for("C:\\VMs\\a", roots) == "C:\\"
    assert volume_for("\\\\FS01\\VMStore\\VMs\\a\\x.vhdx", roots) == roots[2]
    assert volume_for("G:\\x\\y.vhdx", roots) == "G:\\"


def test_record_snapshot_writes_volumes_vms_and_disks(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 's.db'}")
    vhd = models.VhdInfo(
        path="C:\\ClusterStorage\\Volume1\\a\\a.vhdx",
        format="VHDX",
        type="Dynamic",
        file_size=30 * GiB,
        size=100 * GiB,
        disk_identifier="X",
    )
    vm = models.VMInfo(
        id="vm-a",
        name="a",
        state="Running",
        path="D:\\VMs\\a",
        configuration_location="D:\\VMs\\a",
        snapshot_file_location="D:\\VMs\\a",
        smart_paging_file_path="D:\\VMs\\a",
        config_bytes=1024,
        drives=[
            models.DriveInfo(
                controller_type="SCSI",
                controller_number=0,
                controller_location=0,
                path=vhd.path,
                chain=[vhd],
            ),
            models.DriveInfo(
                controller_type="SCSI",
                controller_number=0,
                controller_location=1,
                path="Disk 3",
                disk_number=3,
            ),
        ],
        dvd_paths=["D:\\ISO\\setup.iso"],
    )
    vols = [
        models.VolumeInfo(
            path=r, exists=True, volume=r, kind=k, file_system="NTFS", capacity=c, free=f
        )
        for r, k, c, f in [
            ("C:\\", "local", 100 * GiB, 50 * GiB),
            ("C:\\ClusterStorage\\Volume1\\", "csv", 4096 * GiB, 1000 * GiB),
            ("D:\\", "local", 2048 * GiB, 1024 * GiB),
        ]
    ]
    hosts = [
        HostInventory(name="hv01", volumes=vols, vms=[vm]),
        HostInventory(name="hv02", error="unreachable"),
    ]
    sid = record_snapshot(store, hosts, taken_at=datetime(2026, 1, 1, 12, 0))  # naive: UTC
    vf = analysis.volume_fill(store)
    assert set(vf["snapshot_id"]) == {sid}
    assert set(vf["host"]) == {"hv01"}  # the host that failed has no rows, not zeros
    assert vf["taken_at"].iloc[0] == pd.Timestamp("2026-01-01 12:00", tz="UTC")
    growth = analysis.vm_growth(store)
    assert growth.loc[0, "volume"] == "D:\\"
    assert growth.loc[0, "file_bytes"] == 30 * GiB + 1024
    assert growth.loc[0, "virtual_bytes"] == 100 * GiB
    disks = analysis.disks(store).set_index("type")
    assert disks.loc["Dynamic", "volume"] == "C:\\ClusterStorage\\Volume1\\"
    # what blocks a move is kept as zero-byte rows of their own type
    assert disks.loc["ISO", "path"] == "D:\\ISO\\setup.iso"
    assert disks.loc["ISO", "volume"] == "D:\\"
    assert disks.loc["PassThrough", "path"] == "Disk 3"
    assert disks.loc[["ISO", "PassThrough"], "file_size"].sum() == 0


# -- loaders on generated history ------------------------------------------------------------------


def test_volume_fill_has_one_row_per_volume_per_snapshot(generated: Store) -> None:
    vf = analysis.volume_fill(generated)
    assert list(vf.columns[:10]) == [
        "taken_at",
        "snapshot_id",
        "host",
        "volume",
        "kind",
        "capacity",
        "free",
        "cluster",
        "used",
        "used_pct",
    ]
    assert vf["snapshot_id"].nunique() == 60
    assert (vf.groupby("snapshot_id").size() == 15).all()  # 3 hosts x (C D E F + the share)
    assert (vf["used"] == vf["capacity"] - vf["free"]).all()
    assert vf["used_pct"].between(0, 100).all()
    assert str(vf["taken_at"].dt.tz) == "UTC"
    assert vf["taken_at"].max() == pd.Timestamp(END)


def test_latest_keeps_each_hosts_own_newest_snapshot() -> None:
    df = pd.DataFrame(
        {"host": ["a", "a", "b", "b"], "snapshot_id": [1, 2, 1, 1], "x": [1, 2, 3, 4]}
    )
    out = analysis.latest(df)
    assert sorted(out["x"]) == [2, 3, 4]  # b missed snapshot 2 and keeps snapshot 1


def test_moves_loader_computes_throughput_for_completed_copies_only(generated: Store) -> None:
    mv = analysis.moves(generated)
    for col in ("host", "vm", "source_volume", "destination_volume", "bytes", "copy_seconds"):
        assert col in mv.columns
    assert {"completed", "failed"} <= set(mv["status"])
    done = mv[mv["status"] == "completed"]
    assert (done["throughput"] == done["bytes"] / done["copy_seconds"]).all()
    assert mv.loc[mv["status"] == "failed", "throughput"].isna().all()
    assert str(mv["odx"].dtype) == "boolean"
    # storage moves never change host, and every generated move changed volume
    assert (mv["source_volume"] != mv["destination_volume"]).all()


def test_throughput_samples_follow_their_move(generated: Store) -> None:
    samples = analysis.throughput_samples(generated)
    assert not samples.empty
    for _move, g in samples.groupby("move_id"):
        assert g["percent"].is_monotonic_increasing
        assert g["bytes_done"].is_monotonic_increasing
        assert g["elapsed_s"].iloc[0] == 0


def test_vm_growth_shows_dynamic_disks_growing(generated: Store) -> None:
    growth = analysis.vm_growth(generated)
    first = growth[growth["snapshot_id"] == growth["snapshot_id"].min()]
    last = growth[growth["snapshot_id"] == growth["snapshot_id"].max()]
    assert last["file_bytes"].sum() > first["file_bytes"].sum()
    assert set(first["vm_name"]) == set(last["vm_name"])


# -- forecast --------------------------------------------------------------------------------------


def test_forecast_finds_the_crossing_date_of_a_linear_trend() -> None:
    vf = fill_frame({("hv01", "D:\\", "local"): [50 + 0.5 * d for d in range(30)]})
    fc = analysis.forecast_fill(vf, threshold_pct=85, horizon_days=90)
    row = fc.iloc[0]
    # 64.5 % today, +0.5 %/day: 41 days to 85 %
    assert row["status"] == "crosses"
    assert row["growth_pct_per_day"] == pytest.approx(0.5, abs=0.01)
    assert row["days_to_threshold"] == pytest.approx(41, abs=0.2)
    assert row["crossing_date"] == (pd.Timestamp(END) + pd.Timedelta(days=41)).floor("D")


def test_forecast_takes_a_move_out_as_a_step_not_as_shrinking() -> None:
    pcts = [60 + 0.3 * d for d in range(40)]
    pcts = [p - (12 if d >= 25 else 0) for d, p in enumerate(pcts)]  # a VM moved out on day 25
    fc = analysis.forecast_fill(fill_frame({("hv01", "E:\\", "local"): pcts}))
    row = fc.iloc[0]
    assert row["growth_pct_per_day"] == pytest.approx(0.3, abs=0.02)
    assert row["steps"] == 1
    assert row["trend_pct"] == pytest.approx(pcts[-1], abs=0.3)


def test_forecast_statuses_above_crosses_ok_and_shared_volumes_once() -> None:
    over = [80 + 0.5 * d for d in range(20)]  # crosses 85 % on day 10
    flat = [40.0] * 20
    share = [30 + 0.01 * d for d in range(20)]
    vf = fill_frame(
        {
            ("hv01", "D:\\", "local"): over,
            ("hv01", "F:\\", "local"): flat,
            ("hv01", "\\\\fs01\\vmstore\\", "smb"): share,
            ("hv02", "\\\\fs01\\vmstore\\", "smb"): share,
        }
    )
    fc = analysis.forecast_fill(vf, threshold_pct=85)
    assert len(fc) == 3
    by_volume = fc.set_index("volume")
    above = by_volume.loc["D:\\"]
    assert above["status"] == "above"
    assert above["crossing_date"] == (pd.Timestamp(END) - pd.Timedelta(days=9)).floor("D")
    assert by_volume.loc["F:\\", "status"] == "ok"
    assert pd.isna(by_volume.loc["F:\\", "crossing_date"])
    assert math.isnan(by_volume.loc["F:\\", "days_to_threshold"])
    assert by_volume.loc["\\\\fs01\\vmstore\\", "host"] == "hv01, hv02"
    assert list(fc["status"]) == ["above", "ok", "ok"]


def test_forecast_on_generated_history_tells_the_story(generated: Store) -> None:
    fc = analysis.forecast_fill(analysis.volume_fill(generated), threshold_pct=85)
    assert {"volume", "crossing_date", "status"} <= set(fc.columns)
    assert len(fc) == 13  # 3 hosts x 4 local volumes + one share
    above = fc[fc["status"] == "above"]
    assert len(above) >= 1
    soon = fc[(fc["status"] == "crosses") & (fc["days_to_threshold"] < 45)]
    assert len(soon) >= 1
    assert (fc.loc[fc["status"] != "ok", "crossing_date"].notna()).all()


# -- throughput and ETA ----------------------------------------------------------------------------


def test_odx_copies_are_clearly_faster_in_generated_history(generated: Store) -> None:
    mv = analysis.moves(generated)
    pairs = analysis.throughput_by_pair(mv)
    assert {"ODX", "no ODX"} <= set(pairs["odx"])
    assert pairs["host"].nunique() >= 2
    assert pairs.groupby("odx")["pair"].nunique().min() >= 2
    cmp = analysis.odx_comparison(mv).set_index("odx")
    assert cmp.loc["ODX", "speedup"] > 5
    assert (
        cmp.loc["ODX", "moves"] + cmp.loc["no ODX", "moves"] == (mv["status"] == "completed").sum()
    )


def test_eta_accuracy_ratio_and_summary() -> None:
    mv = pd.DataFrame(
        {
            "id": ["a", "b", "c", "d"],
            "host": ["hv01"] * 4,
            "vm": ["w", "x", "y", "z"],
            "status": ["completed", "completed", "completed", "failed"],
            "bytes": [100, 100, 100, 100],
            "copy_seconds": [110.0, 50.0, 100.0, 10.0],
            "estimated_seconds": [100.0, 100.0, None, 100.0],
            "odx": pd.array([False, True, False, False], dtype="boolean"),
        }
    )
    acc = analysis.eta_accuracy(mv)
    assert list(acc["id"]) == ["a", "b"]  # c has no estimate, d failed
    assert list(acc["ratio"]) == pytest.approx([1.1, 0.5])
    summary = analysis.eta_summary(acc).set_index("odx")
    assert summary.loc["no ODX", "within"] == 1.0
    assert summary.loc["ODX", "within"] == 0.0
    assert summary.loc["all", "moves"] == 2


# -- rebalancing -----------------------------------------------------------------------------------


def test_rebalance_frees_enough_with_the_fewest_bytes() -> None:
    volumes = volumes_frame(
        [("hv01", "D:\\", "local", 1000, 90), ("hv01", "F:\\", "local", 4000, 10)]
    )
    # limit 84 %: 60 GiB must go. The cheapest cover is 40 + 20, not the single 65.
    vms = vms_frame(
        [
            ("hv01", "big", "D:\\", 65),
            ("hv01", "mid", "D:\\", 40),
            ("hv01", "small", "D:\\", 20),
            ("hv01", "tiny", "D:\\", 15),
        ]
    )
    p = analysis.rebalance(volumes, vms, 85)
    assert sorted(m.vm for m in p) == ["mid", "small"]
    assert p.bytes_moved == 60 * GiB
    assert all(m.destination == f"F:\\VMs\\{m.vm}" for m in p)
    after = p.volumes.set_index("volume")
    assert after.loc["D:\\", "used_pct_after"] <= 84
    assert after.loc["D:\\", "status"] == "fixed"
    assert p.unfixed.empty


def test_rebalance_stays_on_the_host_and_may_use_a_share_it_sees() -> None:
    volumes = volumes_frame(
        [
            ("hv01", "D:\\", "local", 1000, 95),
            ("hv02", "E:\\", "local", 4000, 5),  # roomy, but another host's
            ("hv01", "\\\\fs01\\vmstore\\", "smb", 8000, 30),
            ("hv02", "\\\\fs01\\vmstore\\", "smb", 8000, 30),
        ]
    )
    vms = vms_frame([("hv01", "web01", "D:\\", 150)])
    p = analysis.rebalance(volumes, vms, 85)
    assert [(m.host, m.destination) for m in p] == [("hv01", "\\\\fs01\\vmstore\\VMs\\web01")]


def test_rebalance_skips_full_forecast_crossing_and_system_destinations() -> None:
    volumes = volumes_frame(
        [
            ("hv01", "C:\\", "local", 4000, 1),  # the system drive: never a destination
            ("hv01", "D:\\", "local", 1000, 90),
            ("hv01", "E:\\", "local", 1000, 80),  # 70 GiB would take it over 84 %
            ("hv01", "F:\\", "local", 1000, 20),  # the forecast says it crosses soon
            ("hv01", "G:\\", "local", 1000, 50),
        ]
    )
    vms = vms_frame([("hv01", "a", "D:\\", 70)])
    forecast = pd.DataFrame(
        [{"host": "hv01", "volume": "F:\\", "kind": "local", "status": "crosses"}]
    )
    p = analysis.rebalance(volumes, vms, 85, forecast=forecast)
    assert [m.destination for m in p] == ["G:\\VMs\\a"]


def test_rebalance_reports_what_it_cannot_fix_and_moves_nothing_for_it() -> None:
    volumes = volumes_frame(
        [
            ("hv01", "C:\\", "local", 100, 95),  # no VMs on it
            ("hv01", "D:\\", "local", 1000, 95),  # its VMs fit nowhere
            ("hv01", "E:\\", "local", 1000, 80),
        ]
    )
    vms = vms_frame([("hv01", "a", "D:\\", 60), ("hv01", "b", "D:\\", 60)])
    p = analysis.rebalance(volumes, vms, 85)
    assert list(p) == []
    assert sorted(p.unfixed["volume"]) == ["C:\\", "D:\\"]
    assert "no VM" in p.unfixed.set_index("volume").loc["C:\\", "reason"]
    assert (p.volumes.set_index("volume").loc[["C:\\", "D:\\"], "status"] == "still above").all()


def test_rebalance_never_moves_what_precheck_refuses_and_says_so() -> None:
    volumes = volumes_frame(
        [("hv01", "D:\\", "local", 1000, 90), ("hv01", "F:\\", "local", 4000, 10)]
    )
    vms = vms_frame([("hv01", "iso", "D:\\", 80), ("hv01", "paused", "D:\\", 80)])
    vms["state"] = ["Running", "Paused"]
    disks = pd.DataFrame(
        [
            {
                "host": "hv01",
                "vm_id": "id-hv01-iso",
                "volume": "C:\\",
                "type": "ISO",
                "file_size": 0,
            }
        ]
    )
    p = analysis.rebalance(volumes, vms, 85, disks=disks)
    assert list(p) == []
    reason = p.unfixed.iloc[0]["reason"]
    assert "iso (ISO attached)" in reason and "paused (paused)" in reason


def test_rebalance_moves_vms_with_checkpoints_only_as_a_last_resort() -> None:
    volumes = volumes_frame(
        [("hv01", "D:\\", "local", 1000, 90), ("hv01", "F:\\", "local", 4000, 10)]
    )
    vms = vms_frame([("hv01", "cp", "D:\\", 60), ("hv01", "plain", "D:\\", 80)])
    disks = pd.DataFrame(
        [
            {"host": "hv01", "vm_id": "id-hv01-cp", "volume": "D:\\", "type": t, "file_size": s}
            for t, s in (("Dynamic", 55 * GiB), ("Differencing", 5 * GiB))
        ]
        + [
            {
                "host": "hv01",
                "vm_id": "id-hv01-plain",
                "volume": "D:\\",
                "type": "Fixed",
                "file_size": 80 * GiB,
            }
        ]
    )
    assert [m.vm for m in analysis.rebalance(volumes, vms, 85)] == ["cp"]  # fewer bytes
    assert [m.vm for m in analysis.rebalance(volumes, vms, 85, disks=disks)] == ["plain"]


def test_rebalance_counts_only_the_bytes_a_vm_holds_on_the_full_volume() -> None:
    volumes = volumes_frame(
        [
            ("hv01", "D:\\", "local", 1000, 90),
            ("hv01", "E:\\", "local", 1000, 10),
            ("hv01", "F:\\", "local", 4000, 10),
        ]
    )
    # 'split' has its configuration on D:\ but most of its disk bytes on E:\
    vms = vms_frame([("hv01", "split", "D:\\", 100), ("hv01", "whole", "D:\\", 110)])
    disks = pd.DataFrame(
        [
            {
                "host": "hv01",
                "vm_id": "id-hv01-split",
                "volume": "E:\\",
                "type": "Dynamic",
                "file_size": 95 * GiB,
            },
            {
                "host": "hv01",
                "vm_id": "id-hv01-whole",
                "volume": "D:\\",
                "type": "Dynamic",
                "file_size": 110 * GiB,
            },
        ]
    )
    # counted as a whole, 'split' would be the cheaper move; it frees only 5 GiB on D:\
    assert [m.vm for m in analysis.rebalance(volumes, vms, 85)] == ["split"]
    assert [m.vm for m in analysis.rebalance(volumes, vms, 85, disks=disks)] == ["whole"]


def test_rebalance_on_generated_history_fixes_every_full_volume(generated: Store) -> None:
    vf = analysis.volume_fill(generated)
    fc = analysis.forecast_fill(vf)
    vms = analysis.latest(analysis.vm_growth(generated))
    p = analysis.rebalance(
        analysis.latest(vf),
        vms,
        85,
        disks=analysis.latest(analysis.disks(generated)),
        forecast=fc,
        moves_history=analysis.moves(generated),
    )
    assert len(p) >= 1
    assert p.unfixed.empty
    assert (p.volumes["used_pct_after"] < 85).all()
    known = set(zip(vms["host"], vms["vm_name"], strict=True))
    assert all((m.host, m.vm) in known for m in p)


def test_write_plan_round_trips_as_a_plan(tmp_path: Path) -> None:
    moves = [
        models.MoveRequest(
            host="hv01", vm="web01", destination=analysis.destination_for("E:\\", "web01")
        ),
        models.MoveRequest(
            host="hv02",
            vm='odd: "name"?',
            destination=analysis.destination_for("\\\\fs01\\vmstore\\", 'odd: "name"?'),
        ),
    ]
    path = analysis.write_plan(moves, tmp_path / "plan.yaml", comment="generated\nby a test")
    text = path.read_text(encoding="utf-8")
    assert text.startswith("# generated\n# by a test\n")
    plan = analysis.read_plan(path)
    assert [m.destination for m in plan.moves] == [
        "E:\\VMs\\web01",
        "\\\\fs01\\vmstore\\VMs\\odd_ _name__",
    ]
    assert plan.moves[1].vm == 'odd: "name"?'
    assert all(m.mode == "all" for m in plan.moves)
    with pytest.raises(ValueError):
        analysis.write_plan([], tmp_path / "empty.yaml")


# -- the lab ---------------------------------------------------------------------------------------


def test_history_from_a_lab_estate_gives_a_plan_the_lab_can_run(tmp_path: Path) -> None:
    from hvmove.lab.build import add_vm, new_estate
    from hvmove.lab.estate import LabSettings

    estate = new_estate(tmp_path / "lab", hosts=2, settings=LabSettings(size_scale=65536))
    add_vm(estate, "hv01", "web01", disks=[(80 * GiB, 0.6, "Dynamic")])
    add_vm(estate, "hv01", "sql01", disks=[(60 * GiB, 1, "Fixed"), (20 * GiB, 0.4, "Dynamic")])
    add_vm(estate, "hv01", "app01", state="Off", checkpoints=2)
    add_vm(estate, "hv02", "dc01", disks=[(40 * GiB, 0.5, "Dynamic")])
    estate.save()
    url = f"sqlite:///{tmp_path / 'h.db'}"
    summary = generate_history(url, days=30, seed=7, lab_estate=estate, end=END)
    assert summary["hosts"] == ["hv01", "hv02"]
    store = Store(url)
    vms = analysis.latest(analysis.vm_growth(store))
    # the history ends where the lab is: same VMs, ids and locations
    lab_vms = {(vm.host, vm.name): vm for vm in estate.data.vms}
    assert set(zip(vms["host"], vms["vm_name"], strict=True)) == set(lab_vms)
    for row in vms.itertuples():
        assert row.vm_id == lab_vms[(row.host, row.vm_name)].id
    vf = analysis.volume_fill(store)
    p = analysis.rebalance(
        analysis.latest(vf),
        vms,
        85,
        disks=analysis.latest(analysis.disks(store)),
        forecast=analysis.forecast_fill(vf),
        moves_history=analysis.moves(store),
    )
    assert len(p) >= 1 and p.unfixed.empty
    plan = analysis.read_plan(analysis.write_plan(p, tmp_path / "plan.yaml"))
    for move in plan.moves:
        vm = lab_vms[(move.host, move.vm)]
        assert move.destination is not None
        # what precheck looks at: same host, an existing volume with room, a new folder
        dest = estate.volume_of(move.host, move.destination)
        assert dest.root != estate.volume_of(vm.host, vm.configuration_location).root
        assert not estate.local(move.host, move.destination).exists()
        need = int(p.details.set_index("vm").loc[move.vm, "bytes"])
        assert estate.free_bytes(dest) > need
        assert not vm.checkpoints  # a VM without checkpoints was enough


def test_rebalancing_plan_passes_precheck_against_the_lab(lab, tmp_path: Path) -> None:
    """The whole promise: history from a running lab, the notebook's proposal, and `hvmove
    precheck` accepts the plan (the lab's full volume holds a VM with an ISO attached and one with
    checkpoints, which the proposal must leave alone)."""
    from typer.testing import CliRunner

    from hvmove.cli import app

    url = f"sqlite:///{tmp_path / 'history.db'}"
    generate_history(url, days=30, seed=7, lab_estate=lab.server.estate, end=END)
    store = Store(url)
    vf = analysis.volume_fill(store)
    p = analysis.rebalance(
        analysis.latest(vf),
        analysis.latest(analysis.vm_growth(store)),
        85,
        disks=analysis.latest(analysis.disks(store)),
        forecast=analysis.forecast_fill(vf),
        moves_history=analysis.moves(store),
    )
    assert len(p) >= 1 and p.unfixed.empty
    assert not {m.vm for m in p} & {"iso01", "app01"}
    plan = analysis.write_plan(p, tmp_path / "plan.yaml")
    result = CliRunner().invoke(
        app, ["precheck", str(plan), "--config", str(lab.dir / "hvmove.yaml")]
    )
    assert result.exit_code == 0, result.output


def test_generate_history_refuses_to_write_twice_unless_replacing(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'h.db'}"
    first = generate_history(url, days=5, seed=1, end=END)
    with pytest.raises(ValueError, match="replace"):
        generate_history(url, days=5, seed=1, end=END)
    again = generate_history(url, days=5, seed=1, end=END, replace=True)
    assert again["moves"] == first["moves"]
    store = Store(url)
    assert analysis.volume_fill(store)["snapshot_id"].nunique() == 5
    assert len(analysis.moves(store)) == first["moves"]


def test_generated_history_is_reproducible(tmp_path: Path) -> None:
    frames = []
    for name in ("a", "b"):
        url = f"sqlite:///{tmp_path / name}.db"
        generate_history(url, days=10, seed=3, end=END)
        frames.append(analysis.volume_fill(url)[["host", "volume", "used"]])
    pd.testing.assert_frame_equal(frames[0], frames[1])


def test_plots_render_as_png(generated: Store) -> None:
    vf = analysis.volume_fill(generated)
    mv = analysis.moves(generated)
    fc = analysis.forecast_fill(vf)
    p = analysis.rebalance(analysis.latest(vf), analysis.latest(analysis.vm_growth(generated)))
    for fig in (
        analysis.plot_fill(vf, fc),
        analysis.plot_throughput(analysis.throughput_by_pair(mv)),
        analysis.plot_eta(analysis.eta_accuracy(mv)),
        analysis.plot_rebalance(p),
    ):
        assert analysis.figure_png(fig).startswith(b"\x89PNG")
