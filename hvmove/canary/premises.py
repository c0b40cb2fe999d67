"""Premises the canary observes with Test-CanaryPremises and the host's facts."""

from __future__ import annotations

from hvmove import models
from hvmove.canary.report import Premise
from hvmove.hyperv.client import HostClient
from hvmove.models_doctor import CanaryCreated, CanaryPremises

LITERAL = "brackets in a disk name taken literally"
ATTACHED = "Test-VHD on an attached disk"
PATTERN = "known pattern intact after the moves"
LANGUAGE = "host messages in English"
PARENT = "a parent no drive attaches moved with its child (mode all)"
PROBED = (LITERAL, ATTACHED, PATTERN, LANGUAGE)


def probe_premises(client: HostClient, created: CanaryCreated | None) -> list[Premise]:
    """Literal paths, Test-VHD on an attached disk, the pattern, the messages' language; on the
    canary's disks wherever they are now."""
    if created is None:
        return []
    paths = client.vm_paths(created.vm_id)
    child = paths.disk_paths[0]
    facts = client.vhd_facts([child]).disks
    base = facts[0].vhd.parent_path if facts and facts[0].vhd else None
    p = client.call(
        "Test-CanaryPremises", CanaryPremises, DiskPath=child, BasePath=base or created.base_path
    )
    english = p.ui_culture.lower().startswith("en")
    return [
        _parent_premise(created, child, base),
        Premise(
            name=LITERAL,
            observed=p.literal_path_ok,
            detail=f"Get-VHD -Path '{child}': {p.literal_path_detail}",
            impact="paths with [ ] are safe"
            if p.literal_path_ok
            else "Get-VHD/Test-VHD resolve [ ] as wildcards: disks named like 'web [prod].vhdx' "
            "fail verification or match other files (review finding 5)",
        ),
        Premise(
            name=ATTACHED,
            observed=p.attached_test_vhd,
            detail=p.attached_detail or "Test-VHD returned True while the disk was mounted",
            impact="verification of running VMs can rely on Test-VHD"
            if p.attached_test_vhd
            else "Test-VHD fails on disks in use: verification of every running VM will fail "
            "until it tests another way",
        ),
        Premise(
            name=PATTERN,
            observed=bool(p.pattern_sha256) and p.pattern_sha256 == created.pattern_sha256,
            detail=f"written {created.pattern_sha256[:16]}..., read back "
            f"{(p.pattern_sha256 or 'nothing')[:16]}...",
            impact="the data survived the move bit for bit"
            if p.pattern_sha256 == created.pattern_sha256
            else "the disk's content changed or could not be read back",
        ),
        Premise(
            name=LANGUAGE,
            observed=english,
            detail=f"UI culture {p.ui_culture}; Get-VM says: {p.sample_error} "
            f"[{p.sample_error_id}]",
            impact="messages are English"
            if english
            else "messages are localized: hvmove's busy/permanent classification by message text "
            "will misread them (review finding 10); classification by error id is needed",
        ),
    ]


def _parent_premise(created: CanaryCreated, child: str, base: str | None) -> Premise:
    """The canary's base disk is the parent of its only drive and attached to nothing itself
    (an "unmanaged VHD"). Whether a move takes such a parent along is not documented (hvmove
    layout.carried_parents); after the first move (mode all) its path tells."""
    if child.lower() == created.child_path.lower() or not base:
        return Premise(
            name=PARENT,
            observed=None,
            detail=f"not observed: the child is at {child}, its parent {base or 'unknown'}",
            impact="the canary's move did not happen",
        )
    moved = base.lower() != created.base_path.lower()
    return Premise(
        name=PARENT,
        observed=moved,
        detail=f"after the move the child's parent is {base} (created as {created.base_path})",
        impact="Hyper-V carries an unmanaged parent in mode all (its source copy stays; cleanup "
        "removes it when no VM uses it): the lab's premise unnamed_parents_move_with_child true "
        "matches"
        if moved
        else "Hyper-V leaves an unmanaged parent where it is: the prechecks count it as moved "
        "(space overstated), the switch is judged without it and cleanup keeps it (still "
        "referenced); the lab's premise unnamed_parents_move_with_child false matches",
    )


def cluster_premise(facts: models.HostFacts) -> Premise:
    if not facts.cluster_name:
        return Premise(
            name="cluster configuration refreshed after the move",
            observed=None,
            detail="the host is not clustered",
            impact="nothing to refresh",
        )
    return Premise(
        name="cluster configuration refreshed after the move",
        observed=None,
        detail=f"host is in cluster {facts.cluster_name}, but the canary VM is not a cluster "
        "role, so the refresh cannot be observed with it",
        impact="not observed: move one clustered test VM and check its Virtual Machine "
        "Configuration resource (review finding 4)",
    )
