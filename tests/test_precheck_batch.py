"""Batched prechecks (each host read once for all its moves) against the per-VM prechecks they
replace: same reports, a VM's error stays with that VM, and every run reads the host again."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from hvmove import batch, prechecks
from hvmove.hyperv import errors as e
from hvmove.hyperv import prefetch
from hvmove.hyperv.client import HostClient
from hvmove.lab.build import add_vm
from hvmove.models import MoveRequest, PrecheckReport
from hvmove.plans import ResolvedMove
from tests.conftest import GiB, Lab, make_lab

# (host, vm, destination): every kind of outcome the prechecks have, on several volumes
MOVES = [
    ("hv01", "web01", "E:\\VMs\\web01"),  # passes; ODX inside san-a
    ("hv01", "sql01", "F:\\VMs\\sql01"),  # passes; no ODX (jbod); two disks
    ("hv01", "app01", "E:\\VMs\\app01"),  # checkpoints: warns, differencing chain
    ("hv01", "iso01", "E:\\VMs\\iso01"),  # ISO attached: fails
    ("hv01", "pt01", "E:\\VMs\\pt01"),  # pass-through disk: fails
    ("hv01", "sh01", "F:\\VMs\\sh01"),  # shared VHDX: fails
    ("hv01", "web02", "\\\\fs01\\vmstore\\web02"),  # share without delegation: fails per VM
    ("hv01", "web03", "Z:\\VMs\\web03"),  # no such drive: fails per VM
    ("hv01", "big01", "E:\\VMs\\big01"),  # a file already at the destination: fails
    ("hv01", "web04", "C:\\ClusterStorage\\Volume9\\web04"),  # a CSV not mounted here
    ("hv02", "dc01", "E:\\VMs\\dc01"),  # another host
    ("hv02", "dc02", "F:\\VMs\\dc02"),
]


OPTS = prechecks.Options(probe=False)


def _populate(estate) -> None:
    add_vm(estate, "hv01", "web01", disks=[(40 * GiB, 0.5, "Dynamic")])
    add_vm(estate, "hv01", "sql01", disks=[(60 * GiB, 1, "Fixed"), (20 * GiB, 0.4, "Dynamic")])
    add_vm(estate, "hv01", "app01", state="Off", checkpoints=2)
    add_vm(estate, "hv01", "iso01", dvd=["D:\\ISO\\setup.iso"])
    add_vm(estate, "hv01", "pt01", pass_through=True)
    add_vm(estate, "hv01", "sh01", shared_disk=True)
    for name in ("web02", "web03", "web04", "big01"):
        add_vm(estate, "hv01", name, state="Off")
    add_vm(estate, "hv02", "dc01", disks=[(20 * GiB, 0.5, "Dynamic")])
    add_vm(estate, "hv02", "dc02", state="Saved")
    estate.host("hv01").smb_delegation = False
    existing = estate.local("hv01", "E:\\VMs\\big01\\Virtual Hard Disks\\big01.vhdx")
    existing.parent.mkdir(parents=True)
    existing.write_bytes(b"not ours")


@pytest.fixture
def lab(tmp_path: Path):
    lab = make_lab(tmp_path, populate=_populate)
    for guest in lab.server.engine.guests.values():
        guest.stop.set()  # both paths must see the same bytes on the volumes
    yield lab
    lab.server.stop()


def _moves(lab: Lab, moves=MOVES) -> list[ResolvedMove]:
    out = []
    for host, name, dest in moves:
        with lab.client(host) as c:
            vm = next(v for v in c.inventory().vms if v.name == name)
        out.append(ResolvedMove(MoveRequest(host=host, vm=name, destination=dest), vm))
    return out


def _per_vm(monkeypatch: pytest.MonkeyPatch) -> None:
    """precheck_all as it was: every precheck asks the host itself (no snapshot)."""
    monkeypatch.setattr(batch, "host_snapshots", lambda cfg, moves, clients: dict(clients))


def _comparable(report: PrecheckReport) -> dict[str, Any]:
    """The report without what a bandwidth probe measures (a new number each probe)."""
    out = report.model_dump()
    out["mbps"] = out["eta_seconds"] = None
    for check in out["checks"]:
        if check["name"] == "bandwidth" and check["status"] == "pass":
            check["detail"] = check["numbers"] = None
    return out


def _calls(lab: Lab, since: int) -> Counter[str]:
    return Counter(script for _host, script, _params in lab.server.scripts.calls[since:])


def test_batched_prechecks_give_the_per_vm_reports(
    lab: Lab, monkeypatch: pytest.MonkeyPatch
) -> None:
    moves = _moves(lab)
    start = len(lab.server.scripts.calls)
    batched = batch.precheck_all(lab.config, moves)
    calls = _calls(lab, start)
    with monkeypatch.context() as m:
        _per_vm(m)
        start = len(lab.server.scripts.calls)
        single = batch.precheck_all(lab.config, moves)
        per_vm_calls = _calls(lab, start)
    assert [_comparable(r) for r in batched] == [_comparable(r) for r in single]
    # every kind of outcome was there to compare
    outcomes = {(r.vm, c.name, c.status) for r in single for c in r.checks}
    for expected in [
        ("web01", "odx", "pass"),
        ("iso01", "attached ISO", "fail"),
        ("pt01", "pass-through disk", "fail"),
        ("sh01", "shared VHDX", "fail"),
        ("app01", "checkpoints", "warn"),
        ("web02", "destination path", "fail"),
        ("web03", "destination path", "fail"),
        ("web04", "destination path", "fail"),
        ("big01", "destination files", "fail"),
        ("dc02", "bandwidth", "pass"),
        ("web02", "bandwidth", "warn"),  # the share's probe is refused: that VM's own probe
    ]:
        assert expected in outcomes, expected
    assert sum(r.ok for r in single) == 5
    # the per-VM path asks each VM's questions one by one; the batch asks per host
    assert per_vm_calls["Get-StorageMoveStatus"] == len(MOVES)
    assert calls["Get-PrecheckFacts"] == calls["Get-HostFacts"] == 2
    assert calls["Get-VMInventory"] == calls["Get-StorageMoveStatus"] == 0
    assert sum(calls.values()) < sum(per_vm_calls.values()) / 2
    # one probe per destination volume (hv01 E: and F:, hv02 E: and F:), and their own probe for
    # the three moves whose destination the host could not resolve
    assert per_vm_calls["Measure-Bandwidth"] == len(MOVES)
    assert calls["Measure-Bandwidth"] == 4 + 3
    # the checks asked for exactly the paths the batch read (prechecks.paths_of): one volume read
    # per host, one ODX answer per pair of volumes, the three unresolved ones asked on their own
    assert calls["Get-VolumeInfo"] == calls["Get-VHDFacts"] == 2
    assert calls["Get-OdxStatus"] == 4 + 3


def test_a_vm_the_batch_cannot_read_fails_alone(lab: Lab, monkeypatch: pytest.MonkeyPatch) -> None:
    """A VM gone since the inventory: its entry in the batch carries the error, its own precheck
    then asks the host and says so; the other moves of the batch are untouched."""
    moves = _moves(lab, [m for m in MOVES if m[1] in ("web01", "sql01", "app01")])
    gone = lab.vm("sql01")
    lab.server.estate.data.vms.remove(gone)
    start = len(lab.server.scripts.calls)
    reports = batch.precheck_all(lab.config, moves)
    calls = _calls(lab, start)
    with monkeypatch.context() as m:
        _per_vm(m)
        single = batch.precheck_all(lab.config, moves)
    assert [_comparable(r) for r in reports] == [_comparable(r) for r in single]
    by_vm = {r.vm: r for r in reports}
    assert [c.name for c in by_vm["sql01"].failures()] == ["vm"]
    assert by_vm["web01"].ok and by_vm["app01"].ok
    # only the gone VM was looked up on its own (by id, then every VM by name)
    assert calls["Get-VMInventory"] == 2 and calls["Get-StorageMoveStatus"] == 0


def test_a_failed_batch_read_falls_back_to_each_vms_own_reads(
    lab: Lab, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Batch calls fail (the VM read writes an error; the volume read's reply is lost): nothing
    is taken from them, every precheck asks the host itself, the reports are the per-VM ones."""
    moves = _moves(lab, MOVES[:4])
    lab.server.scripts.write_errors["Get-PrecheckFacts"] = "Get-VM: the operation failed"
    volumes = HostClient.volumes

    def lost(self: HostClient, paths: list[str], *, partial: bool = False):
        if partial:  # only the batch reads volumes partially here
            raise e.TransientError(self.name, "Get-VolumeInfo", "reply lost")
        return volumes(self, paths, partial=partial)

    start = len(lab.server.scripts.calls)
    with monkeypatch.context() as m:
        m.setattr(HostClient, "volumes", lost)
        reports = batch.precheck_all(lab.config, moves)
    calls = _calls(lab, start)
    del lab.server.scripts.write_errors["Get-PrecheckFacts"]
    with monkeypatch.context() as m:
        _per_vm(m)
        single = batch.precheck_all(lab.config, moves)
    assert [_comparable(r) for r in reports] == [_comparable(r) for r in single]
    assert sum(r.ok for r in reports) == 3
    assert calls["Get-VMInventory"] == calls["Get-StorageMoveStatus"] == len(moves)
    assert calls["Get-VolumeInfo"] == len(moves)  # each precheck's own


def test_each_run_reads_the_host_again(lab: Lab) -> None:
    """No fact outlives its run: what changed on the host since is what the next run sees."""
    moves = _moves(lab, [m for m in MOVES if m[1] in ("web01", "dc01")])
    first = batch.precheck_all(lab.config, moves)
    assert all(r.ok for r in first)
    lab.vm("web01").dvd_paths.append("D:\\ISO\\tools.iso")
    lab.server.estate.host("hv02").maximum_storage_migrations = 0
    start = len(lab.server.scripts.calls)
    again = {r.vm: r for r in batch.precheck_all(lab.config, moves)}
    assert [c.name for c in again["web01"].failures()] == ["attached ISO"]
    assert [c.name for c in again["dc01"].failures()] == ["host limit"]
    assert _calls(lab, start)["Get-PrecheckFacts"] == 2


def test_a_running_move_is_seen_by_the_batch(tmp_path: Path) -> None:
    """The move status comes from the batch's one read of the host's migration jobs: a move
    running on one VM blocks that VM, as its per-VM precheck says, and no other."""
    lab = make_lab(tmp_path, rate_scale=0.5)  # slow: the copy is still running when checked
    try:
        moves = _moves(lab, [("hv01", "web01", "E:\\VMs\\web01"), ("hv01", "sql01", "E:\\s")])
        with lab.client("hv01") as c:
            started = c.start_move(moves[0].vm.id, "all", destination="F:\\elsewhere\\web01")
            assert started.status == "started"
            try:
                batched = {r.vm: r for r in batch.precheck_all(lab.config, moves)}
                single = prechecks.run(c, moves[0].request, OPTS, vm_id=moves[0].vm.id).report
            finally:
                c.stop_move(moves[0].vm.id)
        blocked = [(x.name, x.status) for x in batched["web01"].checks if x.name == "move running"]
        assert blocked == [("move running", "fail")]
        assert [(x.name, x.status) for x in single.checks if x.name == "move running"] == blocked
        assert batched["sql01"].ok
    finally:
        lab.server.stop()


def test_a_host_the_batch_cannot_reach_is_not_asked_again(lab: Lab) -> None:
    """hv02 is down: the batch stops reading it after the first refused connection, and the
    prechecks fail with the same one error as without a batch."""
    moves = _moves(lab, [m for m in MOVES if m[0] == "hv02"])
    lab.server.endpoint.kill_host("hv02")
    tried: list[str] = []
    call = HostClient.call

    def counted(self: HostClient, script: str, model, **params):
        tried.append(script)
        return call(self, script, model, **params)

    with pytest.MonkeyPatch.context() as m:
        m.setattr(HostClient, "call", counted)
        with pytest.raises(e.HostUnreachable):
            batch.precheck_all(lab.config, moves)
    # the batch's host facts, then the first precheck's own host facts: nothing else
    assert tried == ["Get-HostFacts", "Get-HostFacts"]


def test_reads_in_chunks_give_the_same_reports(lab: Lab, monkeypatch: pytest.MonkeyPatch) -> None:
    """A call reads a bounded number of VMs and paths (each costs real time on a host); the
    reports do not depend on how the reads were cut."""
    moves = _moves(lab)
    whole = batch.precheck_all(lab.config, moves)
    monkeypatch.setattr(prefetch, "VMS_PER_CALL", 3)
    monkeypatch.setattr(prefetch, "PATHS_PER_CALL", 4)
    start = len(lab.server.scripts.calls)
    cut = batch.precheck_all(lab.config, moves)
    calls = _calls(lab, start)
    assert [_comparable(r) for r in cut] == [_comparable(r) for r in whole]
    assert calls["Get-PrecheckFacts"] == 4 + 1  # 10 VMs on hv01 by 3, 2 on hv02
    assert calls["Get-VolumeInfo"] > 2 and calls["Get-VHDFacts"] > 2


def test_a_volume_several_hosts_see_is_probed_once_for_the_batch(tmp_path: Path) -> None:
    """Probed by every host at once, a share measured its bandwidth split between the probes
    (0.17 of it with six hosts) and the night planned every copy to it that much slower."""
    from hvmove.store import Store

    def estate(e: Any) -> None:
        for host, vm in (("hv01", "web01"), ("hv01", "sql01"), ("hv02", "dc01"), ("hv02", "dc02")):
            add_vm(e, host, vm, disks=[(20 * GiB, 0.5, "Dynamic")])

    lab = make_lab(tmp_path, populate=estate)
    try:
        store = Store(lab.config.store_url())
        plan = tmp_path / "plan.yaml"
        plan.write_text(
            "moves:\n"
            "  - {host: hv01, vm: web01, destination: '\\\\fs01\\vmstore\\web01'}\n"
            "  - {host: hv02, vm: dc01, destination: '\\\\fs01\\vmstore\\dc01'}\n"
            "  - {host: hv01, vm: sql01, destination: 'F:\\VMs\\sql01'}\n"
            "  - {host: hv02, vm: dc02, destination: 'F:\\VMs\\dc02'}\n"
        )
        moves, _ = batch.load_and_resolve(lab.config, plan, store)
        before = len(lab.server.scripts.calls)
        reports = batch.precheck_all(lab.config, moves, reserve=False, store=store)
        probed = Counter(
            (host, str(params["DestinationPath"])[:7])
            for host, script, params in lab.server.scripts.calls[before:]
            if script == "Measure-Bandwidth"
        )
        # the share once, by whichever host came first; each host's own F: by that host
        share = [n for (_, where), n in probed.items() if where == "\\\\fs01\\"]
        assert share == [1], probed
        assert probed[("hv01", "F:\\VMs\\")] == probed[("hv02", "F:\\VMs\\")] == 1, probed
        by_vm = {m.vm.name: r for m, r in zip(moves, reports, strict=True)}
        assert by_vm["web01"].mbps and by_vm["web01"].mbps == by_vm["dc01"].mbps
    finally:
        lab.server.stop()
