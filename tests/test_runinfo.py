"""Run names an operator reads in the Prefect UI's runs list."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from hvmove.runinfo import night_run_name


def test_night_name_carries_date_window_and_count_in_the_window_zone() -> None:
    berlin = ZoneInfo("Europe/Berlin")
    start = datetime(2026, 12, 1, 22, 0, tzinfo=berlin)
    assert night_run_name(start, start + timedelta(hours=7), 12) == (
        "night 2026-12-01 22:00-05:00 (12 moves)"
    )
    assert (
        night_run_name(start, start + timedelta(hours=1), 1)
        == "night 2026-12-01 22:00-23:00 (1 move)"
    )


def test_a_window_of_a_day_names_its_last_day() -> None:
    start = datetime(2026, 12, 1, 5, 55, tzinfo=ZoneInfo("UTC"))
    # not '05:55-05:55', which reads as an empty window
    assert night_run_name(start, start + timedelta(days=1), 6) == (
        "night 2026-12-01 05:55-12-02 05:55 (6 moves)"
    )


def test_move_run_name_from_validated_and_plain_parameters() -> None:
    """A deployed migrate-vm run gets its `vhds` as VhdMapping models (Prefect validates the
    parameters on the worker); naming the run must not crash it (it did: the README's vhds-mode
    move crashed every deployed night)."""
    from hvmove.models import VhdMapping
    from hvmove.runinfo import move_run_name

    dest = "\\\\fs01\\vmstore\\file01\\file01.vhdx"
    src = "D:\\VMs\\file01\\Virtual Hard Disks\\file01.vhdx"
    for vhds in (
        [VhdMapping(source=src, destination=dest)],
        [{"source": src, "destination": dest}],
    ):
        params = {"host": "hv02", "vm": "file01", "mode": "vhds", "vhds": vhds}
        assert move_run_name(params) == f"move file01 on hv02 to {dest}"
    assert move_run_name({"host": "hv01", "vm": "web [prod]", "destination": "E:\\x"}) == (
        "move web [prod] on hv01 to E:\\x"
    )
    assert move_run_name({"host": "hv01", "vm": "a", "vhds": None}) == "move a on hv01 to "
