"""The generated history speaks the production's volume keys: the planner learns a volume pair's
rate from past moves by the keys the prechecks report (hvmove.paths.volume_key), so history
recorded under bare roots ('D:\\') would never be found."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from hvmove import batch, prechecks
from hvmove.lab.history import generate_history
from hvmove.store import Store
from tests.conftest import GiB, make_lab

END = datetime(2026, 11, 1, 6, 0, tzinfo=UTC)


def _populate(estate) -> None:
    from hvmove.lab.build import add_vm

    add_vm(estate, "hv01", "web01", disks=[(40 * GiB, 0.5, "Dynamic")])
    add_vm(estate, "hv01", "sql01", disks=[(60 * GiB, 1, "Fixed"), (20 * GiB, 0.4, "Dynamic")])
    add_vm(estate, "hv01", "app01", disks=[(30 * GiB, 0.5, "Dynamic")])
    add_vm(estate, "hv02", "dc01", disks=[(20 * GiB, 0.5, "Dynamic")])
    add_vm(estate, "hv02", "file01", disks=[(50 * GiB, 0.3, "Dynamic")])


def test_history_records_the_volume_keys_the_prechecks_report(tmp_path: Path) -> None:
    lab = make_lab(tmp_path / "lab", populate=_populate)
    try:
        # what production reports for each volume: the host's own answer, keyed as prechecks do
        reported: set[str] = set()
        for host in ("hv01", "hv02"):
            with lab.client(host) as client:
                cluster = client.host_facts().cluster_name
                roots = [v.root for v in lab.server.estate.data.volumes if host in v.hosts]
                for info in client.volumes(roots).volumes:
                    reported.add(prechecks.key_of(client.name, info, cluster))
        url = f"sqlite:///{tmp_path / 'history.db'}"
        generate_history(url, days=40, seed=7, lab_estate=lab.server.estate, end=END)
    finally:
        lab.server.stop()
    store = Store(url)
    moves = store.moves()
    assert moves
    for r in moves:
        assert {r.source_volume, r.destination_volume} <= reported, (r.vm_name, reported)
        assert r.precheck["source_volume"] == r.source_volume
        assert r.precheck["destination_volume"] == r.destination_volume
    # a local volume is one per host: history of hv01's D: is not hv02's
    assert any(r.source_volume.startswith(r.host.lower() + "|") for r in moves)
    # and what the planner looks up by those keys finds the history's copy rates
    rates = batch.past_rates(store)
    assert rates
    assert {k for pair in rates for k in pair} <= reported


def test_the_rebalance_reads_odx_copies_from_moves_recorded_under_volume_keys(
    tmp_path: Path,
) -> None:
    """The rebalance prefers destinations an ODX copy already reached from the VM's volume; it
    compares volume roots, and the store's moves (history and production alike) hold keys."""
    from hvmove import analysis
    from hvmove.analysis.rebalance import _odx_seen

    url = f"sqlite:///{tmp_path / 'history.db'}"
    generate_history(url, days=60, seed=7, end=END)
    moves = analysis.moves(Store(url))
    odx = moves[(moves["status"] == "completed") & moves["odx"].fillna(False).astype(bool)]
    assert not odx.empty and odx["source_volume"].str.contains("|", regex=False).all()
    seen = _odx_seen(moves)
    assert len(seen) >= 2
    for host, src, dst in seen:
        # bare roots, as the rebalance's own volumes are compared (root_key(vol.root))
        assert "|" not in src and "|" not in dst and src.endswith(":\\"), (host, src, dst)


def test_a_time_scaled_labs_history_runs_on_the_labs_clock(tmp_path: Path) -> None:
    """benchmarks/night.py speeds an 8-hour night up 160x (rate_scale): its probes measure the
    scaled rates, so past copies must have run at them too. In real-world MB/s beside tonight's
    scaled probes, an ODX group's one past copy made its offload engine 160x too slow to the
    planner (no ODX copy of that array ran that night)."""
    from hvmove.lab.build import build_default

    def history(scale: float) -> list[tuple[float, float]]:
        estate = build_default(tmp_path / f"lab{scale}", hosts=2, vms=6, seed=7)
        estate.data.settings.rate_scale = scale
        url = f"sqlite:///{tmp_path / f'h{scale}.db'}"
        generate_history(url, days=20, seed=3, lab_estate=estate, end=END)
        done = [r for r in Store(url).moves() if r.status == "completed"]
        return [(r.measured_mbps, r.bytes_total / r.copy_seconds) for r in done]

    real, scaled = history(1.0), history(40.0)
    assert real and len(real) == len(scaled)
    for (probe1, rate1), (probe40, rate40) in zip(real, scaled, strict=True):
        assert probe40 == pytest.approx(40 * probe1, rel=1e-6)
        assert rate40 == pytest.approx(40 * rate1, rel=1e-3)
