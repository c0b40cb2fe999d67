"""hvmove.paths: the one volume key (local per host, CSV per cluster, share per share) used by the
batch, and Windows naming rules for a plan's paths."""

from __future__ import annotations

import pytest

from hvmove import models
from hvmove.analysis import volume_key as analysis_key
from hvmove.batch import night_inputs
from hvmove.config import Config, HostConfig
from hvmove.inventory import HostInventory
from hvmove.paths import path_problem, volume_key

TiB = 1024**4
CSV = "C:\\ClusterStorage\\Volume1\\"


def test_volume_keys_are_unique_across_the_estate() -> None:
    assert volume_key("E:", kind="local", host="HV01") == "hv01|e:\\"
    assert volume_key("e:\\", kind="local", host="hv01") == "hv01|e:\\"
    assert volume_key("\\\\FS01\\VMs", kind="smb", host="hv01") == "\\\\fs01\\vms\\"
    assert volume_key("\\\\fs01\\vms\\", kind="smb", host="hv02") == "\\\\fs01\\vms\\"
    assert volume_key(CSV, kind="csv", host="hv01", cluster="CLU1") == (
        "clu1|c:\\clusterstorage\\volume1\\"
    )
    assert volume_key(CSV, kind="csv", host="hv02", cluster="clu1") == volume_key(
        CSV, kind="csv", host="hv01", cluster="CLU1"
    )
    assert volume_key(CSV, kind="csv", host="hv03", cluster="clu2") != volume_key(
        CSV, kind="csv", host="hv01", cluster="clu1"
    )
    # a cluster that could not be read: shared by every node, never one key per node
    assert volume_key(CSV, kind="csv", host="hv01") == volume_key(CSV, kind="csv", host="hv02")
    with pytest.raises(ValueError, match="host"):
        volume_key("E:\\", kind="local")
    with pytest.raises(ValueError, match="UNC"):
        volume_key("E:\\", kind="smb")


def test_analysis_keys_through_the_same_rule() -> None:
    assert analysis_key("HV01", "E:", "local") == ("hv01", "e:\\")
    assert analysis_key("hv01", CSV, "csv", cluster="CLU1") == ("clu1", CSV.lower())
    assert analysis_key("hv01", "\\\\fs01\\vms", "smb") == ("*", "\\\\fs01\\vms\\")


def _host(name: str) -> HostConfig:
    return HostConfig(
        name=name, address=f"{name}.corp.example", username="svc", password={"env": "X"}
    )


def _inventory(name: str, cluster: str) -> HostInventory:
    facts = models.HostFacts(
        name=name.upper(),
        os_version="10.0.20348",
        maximum_storage_migrations=2,
        virtual_hard_disk_path="C:\\VHD",
        virtual_machine_path="C:\\VM",
        cluster_name=cluster,
        cluster_nodes=[],
    )
    vol = models.VolumeInfo(
        path=CSV, exists=True, volume=CSV, kind="csv", file_system="CSVFS", capacity=TiB, free=TiB
    )
    local = models.VolumeInfo(
        path="E:\\", exists=True, volume="E:\\", kind="local", file_system="NTFS", capacity=TiB,
        free=TiB,
    )  # fmt: skip
    return HostInventory(name=name, facts=facts, volumes=[vol, local])


def test_a_csv_is_one_volume_per_cluster_in_the_night() -> None:
    """Two nodes of one cluster report the same CSV: one volume with one free space, or moves
    from the two nodes could each spend it. Another cluster's Volume1 is another volume."""
    cfg = Config(hosts=[_host(n) for n in ("hv01", "hv02", "hv03")])
    invs = [_inventory("hv01", "CLU1"), _inventory("hv02", "CLU1"), _inventory("hv03", "CLU2")]
    keys = sorted(v.key for v in night_inputs(cfg, [], [], invs).volumes)
    assert keys == [
        "clu1|c:\\clusterstorage\\volume1\\",
        "clu2|c:\\clusterstorage\\volume1\\",
        "hv01|e:\\",
        "hv02|e:\\",
        "hv03|e:\\",
    ]


# --- Windows naming rules ------------------------------------------------------------------------
GOOD = [
    "E:\\VMs\\web01",
    "e:\\",
    "E:\\VMs\\Büro-DC01\\",
    "E:\\VMs\\[prod] sql's $x `y`; (z)",
    "\\\\fs01\\vmstore\\web01",
    "E:/VMs/web01",
    "E:\\VMs\\con-server",  # CON only as the whole name (or before an extension)
    "E:\\VMs\\.hidden",
    "E:\\a\\" + "x" * 240,
]
BAD = [
    ("VMs\\web01", "absolute"),
    ("E:VMs", "absolute"),
    ("\\\\fs01", "share"),
    ("E:\\VMs\\..\\Windows", "'..' segment"),
    ("E:\\VMs\\.\\web01", "'.' segment"),
    ("E:\\VMs\\CON", "reserved device name CON"),
    ("E:\\VMs\\nul.vhdx", "reserved device name NUL"),
    ("E:\\VMs\\com1\\web01", "reserved device name COM1"),
    ("E:\\VMs\\Lpt9.txt", "reserved device name LPT9"),
    ("E:\\VMs\\AUX .vhdx", "reserved device name AUX"),
    ("E:\\VMs\\web\x0001", "control character \\0"),
    ("E:\\VMs\\web\n01", "control character \\n"),
    ("E:\\VMs\\web01.", "ends with a period"),
    ("E:\\VMs\\web01 \\x", "ends with a space"),
    ("E:\\VMs\\a:b", "':'"),
    ("E:\\VMs\\a?b", "'?'"),
    ("E:\\VMs\\a*b", "'*'"),
    ('E:\\VMs\\a"b', "'\"'"),
    ("E:\\VMs\\a<b>", "'<'"),
    ("E:\\VMs\\a|b", "'|'"),
    ("E:\\VMs\\\\web01", "empty folder name"),
    ("E:\\" + "x" * 256, "at most 255"),
    ("E:\\" + "\\".join(["x" * 50] * 6), "at most 259"),
]


@pytest.mark.parametrize("path", GOOD)
def test_paths_windows_allows_pass(path: str) -> None:
    assert path_problem(path) == ""


@pytest.mark.parametrize(("path", "rule"), BAD)
def test_each_refusal_is_one_line_naming_the_rule(path: str, rule: str) -> None:
    problem = path_problem(path)
    assert rule in problem
    assert "\n" not in problem and "\x00" not in problem


def test_the_analysis_keeps_two_clusters_csvs_apart(tmp_path) -> None:
    """Inventory snapshots record each host's cluster: one CSV per cluster in the analysis, two
    clusters' Volume1 never merged, two nodes' reports of one CSV one volume."""
    from hvmove.analysis import collapse_shared, volume_fill
    from hvmove.snapshots import record_snapshot
    from hvmove.store import Store

    store = Store(f"sqlite:///{tmp_path / 'store.db'}")
    invs = [_inventory("hv01", "CLU1"), _inventory("hv02", "CLU1"), _inventory("hv03", "CLU2")]
    record_snapshot(store, invs)
    vf = volume_fill(store)
    assert set(vf["cluster"]) == {"CLU1", "CLU2"}
    csv = collapse_shared(vf)
    csv = csv[csv["kind"] == "csv"]
    assert sorted(csv["key"]) == [("clu1", CSV.lower()), ("clu2", CSV.lower())]
    assert sorted(csv["host"]) == ["hv01, hv02", "hv03"]


def test_an_older_store_gets_the_cluster_column(tmp_path) -> None:
    from sqlalchemy import create_engine, inspect, text

    from hvmove.store import Store

    url = f"sqlite:///{tmp_path / 'old.db'}"
    old = create_engine(url)
    with old.begin() as conn:
        conn.execute(
            text(
                "CREATE TABLE volume_snapshots (id INTEGER PRIMARY KEY, snapshot_id INTEGER, "
                "host VARCHAR(255), volume VARCHAR(255), kind VARCHAR(16), capacity BIGINT, "
                "free BIGINT)"
            )
        )
        conn.execute(
            text("INSERT INTO volume_snapshots VALUES (1, 1, 'hv01', 'E:\\', 'local', 1, 1)")
        )
    old.dispose()
    store = Store(url)
    assert "cluster" in {c["name"] for c in inspect(store.engine).get_columns("volume_snapshots")}
    Store(url)  # and again: nothing to add the second time
