"""Cleanup on shared storage: a source file another host's VM uses is kept, whoever owns it.

A Hyper-V host only sees its own VMs, so on an SMB share or a cluster shared volume cleanup asks
every host that can see the volume before it deletes (hvmove.shared_storage)."""

from __future__ import annotations

from pathlib import Path

import pytest

from hvmove import pipeline, shared_storage
from hvmove.config import HostConfig
from hvmove.hyperv.errors import TransientError
from hvmove.lab.build import GiB, add_vm, make_disk
from hvmove.models import HostFacts, MoveRequest
from hvmove.prechecks import Options
from hvmove.store import Store
from tests.conftest import Lab, make_lab

SHARE = "\\\\fs01\\vmstore"
GOLDEN = f"{SHARE}\\Golden\\win2022.vhdx"
OPTS = Options(headroom_percent=10, probe_mib=16)


def vdi(estate) -> None:
    """Two pooled desktops, one per host, whose differencing disks share one golden parent."""
    make_disk(estate, "hv01", GOLDEN, size=40 * GiB, file_size=12 * GiB, type_="Dynamic")
    for host, name in (("hv01", "vdi01"), ("hv02", "vdi02")):
        vm = add_vm(estate, host, name, root=f"{SHARE}\\VMs")
        make_disk(
            estate,
            host,
            vm.drives[0].path,
            size=40 * GiB,
            file_size=2 * GiB,
            type_="Differencing",
            parent=GOLDEN,
        )


@pytest.fixture
def lab(tmp_path: Path):
    lab = make_lab(tmp_path, populate=vdi)
    yield lab
    lab.server.stop()


def move_vdi01(lab: Lab, store: Store, client) -> str:
    req = MoveRequest(host="hv01", vm="vdi01", destination="E:\\VMs\\vdi01")
    vm = lab.vm("vdi01")
    move_id = store.open_move(
        host="hv01", vm_id=vm.id, vm_name=vm.name, request=req.model_dump(mode="json")
    ).id
    pipeline.run_prechecks(client, store, move_id, req, OPTS)
    pipeline.run_copy(client, store, move_id, req, poll_s=0.05)
    pipeline.run_cutover(client, store, move_id, req)
    pipeline.run_verify(client, store, move_id)
    return move_id


def test_golden_parent_used_on_another_host_is_kept(lab: Lab, tmp_path: Path) -> None:
    # Hyper-V carries the golden image beside vdi01's disk (the lab's premise; the documentation
    # is silent): then no VM on hv01 references its source copy, only hv02's vdi02 does
    lab.server.estate.settings.premises.unnamed_parents_move_with_child = True
    store = Store(f"sqlite:///{tmp_path / 'store.db'}")
    golden = lab.server.estate.local("hv01", GOLDEN)
    with lab.client("hv01") as client:
        move_id = move_vdi01(lab, store, client)
        # what makes the check necessary: hv01 alone does not know that hv02's VM uses the parent
        assert client.find_references([GOLDEN], []).files == []
        with shared_storage.asker(lab.config) as ask:
            evidence = pipeline.run_cleanup(client, store, move_id, hosts=lab.config.hosts, ask=ask)
    assert golden.exists()
    assert [k["path"] for k in evidence["kept"]] == [GOLDEN]
    assert "(on hv02)" in evidence["kept"][0]["reason"]
    assert evidence["asked"] == ["hv01", "hv02"]
    child = f"{SHARE}\\VMs\\vdi01\\Virtual Hard Disks\\vdi01.vhdx"
    assert child in evidence["removed"]  # what only vdi01 used is gone
    assert not lab.server.estate.local("hv01", child).exists()
    record = store.get(move_id)
    assert record.cleanup["kept"] and not record.source_removed
    # vdi02 still opens its chain: its parent is intact
    with lab.client("hv02") as other:
        disk = lab.vm("vdi02").drives[0].path
        assert other.vhd_facts([disk]).disks[0].test_ok is True


def test_unreachable_peer_keeps_every_shared_source(lab: Lab, tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'store.db'}")
    with lab.client("hv01") as client:
        move_id = move_vdi01(lab, store, client)
        lab.server.endpoint.kill_host("hv02")
        with shared_storage.asker(lab.config) as ask, pytest.raises(TransientError, match="hv02"):
            pipeline.run_cleanup(client, store, move_id, hosts=lab.config.hosts, ask=ask)
        child = f"{SHARE}\\VMs\\vdi01\\Virtual Hard Disks\\vdi01.vhdx"
        assert lab.server.estate.local("hv01", child).exists()
        assert lab.server.estate.local("hv01", GOLDEN).exists()
        assert store.get(move_id).cleanup is None
        # once hv02 answers, running the step again finishes the job
        lab.server.endpoint.revive_host("hv02")
        with shared_storage.asker(lab.config) as ask:
            evidence = pipeline.run_cleanup(client, store, move_id, hosts=lab.config.hosts, ask=ask)
        assert child in evidence["removed"] and lab.server.estate.local("hv01", GOLDEN).exists()


def test_peer_that_cannot_see_the_share_keeps_every_shared_disk(tmp_path: Path) -> None:
    def populate(estate) -> None:
        vdi(estate)
        # hv02 runs vdi02 from the share but has no delegation: its session sees no file there
        estate.host("hv02").smb_delegation = False

    lab = make_lab(tmp_path / "lab", populate=populate)
    store = Store(f"sqlite:///{tmp_path / 'store.db'}")
    try:
        with lab.client("hv01") as client:
            move_id = move_vdi01(lab, store, client)
            with shared_storage.asker(lab.config) as ask:
                evidence = pipeline.run_cleanup(
                    client, store, move_id, hosts=lab.config.hosts, ask=ask
                )
        kept = {k["path"]: k["reason"] for k in evidence["kept"]}
        assert (
            GOLDEN in kept and "could not be read" in kept[GOLDEN] and "(on hv02)" in kept[GOLDEN]
        )
        assert evidence["removed"] == []  # every virtual disk there might be hv02's parent
        assert lab.server.estate.local("hv01", GOLDEN).exists()
        assert not store.get(move_id).source_removed
    finally:
        lab.server.stop()


def test_parent_shared_on_the_same_host_is_kept_and_the_move_completes(tmp_path: Path) -> None:
    def populate(estate) -> None:
        vdi(estate)
        vm = add_vm(estate, "hv01", "vdi03", root=f"{SHARE}\\VMs")
        make_disk(
            estate,
            "hv01",
            vm.drives[0].path,
            size=40 * GiB,
            file_size=2 * GiB,
            type_="Differencing",
            parent=GOLDEN,
        )

    lab = make_lab(tmp_path / "lab", populate=populate)
    store = Store(f"sqlite:///{tmp_path / 'store.db'}")
    try:
        with lab.client("hv01") as client:
            move_id = move_vdi01(lab, store, client)
            # no other host is passed: this one is still asked, and sees that vdi03 uses the parent
            evidence = pipeline.run_cleanup(client, store, move_id)
        assert [k["path"] for k in evidence["kept"]] == [GOLDEN]
        assert evidence["refused"] == []
        assert lab.server.estate.local("hv01", GOLDEN).exists()
    finally:
        lab.server.stop()


# -- who is asked ---------------------------------------------------------------------------------
def host(name: str, address: str | None = None) -> HostConfig:
    return HostConfig(
        name=name,
        address=address or f"{name}.corp.example",
        username="svc",
        password={"env": "X"},
    )


def facts(cluster: str | None = None, nodes: list[str] | None = None) -> HostFacts:
    return HostFacts(
        name="HV01",
        os_version="10.0.20348",
        maximum_storage_migrations=2,
        virtual_hard_disk_path="C:\\VHD",
        virtual_machine_path="C:\\VM",
        cluster_name=cluster,
        cluster_nodes=nodes or [],
    )


HOSTS = [host("hv01"), host("node2", "HV02.corp.example"), host("hv03")]


def test_kind_of_path() -> None:
    assert shared_storage.kind("\\\\fs01\\vmstore\\x.vhdx") == "smb"
    assert shared_storage.kind("C:\\ClusterStorage\\Volume1\\x.vhdx") == "csv"
    assert shared_storage.kind("c:\\clusterstorage\\volume1\\x.vhdx") == "csv"
    assert shared_storage.kind("D:\\VMs\\ClusterStorage\\x.vhdx") == "local"
    assert shared_storage.kind("D:\\VMs\\x.vhdx") == "local"


def test_local_paths_ask_nobody_else() -> None:
    assert shared_storage.peers_to_ask(HOSTS[0], facts(), HOSTS, ["D:\\VMs\\a.vhdx"]) == {}


def test_smb_paths_ask_every_other_configured_host() -> None:
    p = "\\\\fs01\\vmstore\\a.vhdx"
    assert shared_storage.peers_to_ask(HOSTS[0], facts(), HOSTS, [p, "D:\\b.vhdx"]) == {
        "node2": [p],
        "hv03": [p],
    }


def test_csv_paths_ask_the_cluster_nodes_by_name_or_address() -> None:
    p = "C:\\ClusterStorage\\Volume1\\a.vhdx"
    got = shared_storage.peers_to_ask(
        HOSTS[0], facts("clu1", ["HV01", "HV02"]), HOSTS, [p, "D:\\b.vhdx"]
    )
    assert got == {"node2": [p]}  # hv03 is not a node of clu1


def test_csv_path_with_a_node_hvmove_cannot_ask_is_refused() -> None:
    p = "C:\\ClusterStorage\\Volume1\\a.vhdx"
    with pytest.raises(shared_storage.UnknownClusterNode, match=r"HV04.*not in hvmove\.yaml"):
        shared_storage.peers_to_ask(HOSTS[0], facts("clu1", ["HV01", "HV02", "HV04"]), HOSTS, [p])


def test_csv_path_without_known_cluster_nodes_deletes_nothing() -> None:
    p = "C:\\ClusterStorage\\Volume1\\a.vhdx"
    # cluster membership unreadable, or a cluster whose nodes could not be listed: fail closed
    for unknown in (facts(), facts("clu1", [])):
        with pytest.raises(shared_storage.UnknownClusterNode, match="nothing there was deleted"):
            shared_storage.peers_to_ask(HOSTS[0], unknown, HOSTS, [p])


def test_reference_keys_ignore_how_a_host_names_the_file_server() -> None:
    from hvmove.lab.scripts import ref_key

    a = ref_key("\\\\fs01\\vmstore\\Golden\\w.vhdx")
    assert a == ref_key("\\\\FS01.corp.example\\VMStore\\Golden\\w.vhdx")
    assert a == ref_key("\\\\10.0.0.5\\vmstore\\golden\\W.VHDX\\")
    assert a != ref_key("\\\\fs01\\other\\Golden\\w.vhdx")
    assert ref_key("D:\\VMs\\A.vhdx") == "d:\\vms\\a.vhdx"


def test_host_facts_are_read_only_for_csv_paths() -> None:
    def unread() -> HostFacts:
        raise AssertionError("facts read for a path that is not on a CSV")

    assert shared_storage.peers_to_ask(HOSTS[0], unread, HOSTS, ["D:\\a.vhdx"]) == {}
    assert shared_storage.peers_to_ask(HOSTS[0], unread, HOSTS, ["\\\\fs01\\s\\a.vhdx"])
    csv = ["C:\\ClusterStorage\\Volume1\\a.vhdx"]
    got = shared_storage.peers_to_ask(HOSTS[0], lambda: facts("clu1", ["HV01", "HV02"]), HOSTS, csv)
    assert got == {"node2": csv}
