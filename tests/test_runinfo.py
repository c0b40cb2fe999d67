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
