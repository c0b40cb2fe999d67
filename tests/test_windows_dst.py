"""Windows are wall-clock times in the config's zone, but every duration is real time: a
'22:00-05:00' window is 6 hours on the spring-forward night and 8 on the fall-back night."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from hvmove.batch import any_window, parse_window
from hvmove.planner import Limits, PlannedMove, Throughput, VolumeState, plan

GiB = 1024**3
HOUR = timedelta(hours=1)

# (zone, the evening before the change, real hours of 22:00-05:00 that night)
NIGHTS = [
    ("Europe/Berlin", datetime(2026, 3, 28, 12, 0), 6),  # CET -> CEST at 02:00
    ("Europe/Berlin", datetime(2026, 10, 24, 12, 0), 8),  # CEST -> CET at 03:00
    ("America/New_York", datetime(2026, 3, 7, 12, 0), 6),  # EST -> EDT at 02:00
    ("America/New_York", datetime(2026, 10, 31, 12, 0), 8),  # EDT -> EST at 02:00
    ("Europe/Berlin", datetime(2026, 1, 10, 12, 0), 7),  # an ordinary night
]


def local(zone: str, naive: datetime) -> datetime:
    return naive.replace(tzinfo=ZoneInfo(zone))


@pytest.mark.parametrize(("zone", "noon", "hours"), NIGHTS)
def test_window_across_a_daylight_saving_change_is_real_time(
    zone: str, noon: datetime, hours: int
) -> None:
    now = local(zone, noon).astimezone(UTC)
    win = parse_window("22:00-05:00", now, zone)
    assert win.start.astimezone(ZoneInfo(zone)).strftime("%d %H:%M") == noon.strftime("%d 22:00")
    assert win.end.astimezone(ZoneInfo(zone)).strftime("%H:%M") == "05:00"
    assert win.last_finish - win.start.astimezone(UTC) == hours * HOUR
    margin = parse_window("22:00-05:00", now, zone, margin=timedelta(minutes=30))
    assert margin.last_finish - margin.start.astimezone(UTC) == hours * HOUR - timedelta(minutes=30)


def _one_move(p90_hours: float) -> PlannedMove:
    size = 100 * GiB
    rate = size / (p90_hours * 3600)
    return PlannedMove(
        id="m",
        host="hv01",
        vm="vm",
        source_volumes=["hv01|D:\\"],
        destination_volume="hv01|E:\\",
        bytes=size,
        throughput=Throughput(p50=rate * 1.2, p90=rate),
    )


@pytest.mark.parametrize(("zone", "noon", "hours"), NIGHTS)
def test_planner_admits_only_what_fits_the_real_night(
    zone: str, noon: datetime, hours: int
) -> None:
    now = local(zone, noon).astimezone(UTC)
    win = parse_window("22:00-05:00", now, zone)
    volumes = [
        VolumeState(key=k, capacity=10_000 * GiB, free=10_000 * GiB)
        for k in ("hv01|D:\\", "hv01|E:\\")
    ]
    limits = Limits(hosts={"hv01": 2})
    fits = plan([_one_move(hours - 0.5)], volumes, limits, win, now)
    assert [m.id for m in fits.admitted] == ["m"]
    (admitted,) = fits.admitted
    assert admitted.finish_p90 <= win.end
    assert admitted.finish_p90 - admitted.start == timedelta(hours=hours - 0.5)
    late = plan([_one_move(hours + 0.5)], volumes, limits, win, now)
    assert not late.admitted and [d.id for d in late.deferred] == ["m"]


ZONE = "Europe/Berlin"


@pytest.mark.parametrize(
    ("clock", "start", "end"),
    [
        # before tonight's window: tonight 22:00 to tomorrow 05:00
        (datetime(2026, 1, 10, 12, 0), datetime(2026, 1, 10, 22, 0), datetime(2026, 1, 11, 5, 0)),
        # inside it, before midnight
        (datetime(2026, 1, 10, 23, 30), datetime(2026, 1, 10, 22, 0), datetime(2026, 1, 11, 5, 0)),
        # inside it, after midnight: the window that began yesterday
        (datetime(2026, 1, 11, 3, 0), datetime(2026, 1, 10, 22, 0), datetime(2026, 1, 11, 5, 0)),
        # after it ended: the next night
        (datetime(2026, 1, 11, 6, 0), datetime(2026, 1, 11, 22, 0), datetime(2026, 1, 12, 5, 0)),
    ],
)
def test_overnight_window_wraps_past_midnight(
    clock: datetime, start: datetime, end: datetime
) -> None:
    now = local(ZONE, clock)
    win = parse_window("22:00-05:00", now, ZONE)
    assert win.start == local(ZONE, start)
    assert win.end == local(ZONE, end)


def test_same_day_window_and_a_spent_one_moves_on() -> None:
    win = parse_window("01:00-04:00", local(ZONE, datetime(2026, 1, 10, 12, 0)), ZONE)
    assert (win.start, win.end) == (
        local(ZONE, datetime(2026, 1, 11, 1, 0)),
        local(ZONE, datetime(2026, 1, 11, 4, 0)),
    )
    # 04:50 with a 15-minute margin: what is left of tonight cannot hold a move
    spent = parse_window(
        "22:00-05:00",
        local(ZONE, datetime(2026, 1, 11, 4, 50)),
        ZONE,
        margin=timedelta(minutes=15),
    )
    assert spent.start == local(ZONE, datetime(2026, 1, 11, 22, 0))


def test_now_plus_minutes_is_real_time_too() -> None:
    now = local(ZONE, datetime(2026, 3, 29, 1, 30))  # 30 minutes before the clocks jump
    win = any_window("now+120", now, ZONE, timedelta(0))
    assert win.last_finish - now.astimezone(UTC) == 2 * HOUR


def test_a_margin_across_the_change_is_real_time() -> None:
    # ends 03:30 CEST on the spring-forward night; two real hours before is 00:30 CET
    now = local(ZONE, datetime(2026, 3, 28, 12, 0))
    win = parse_window("22:00-03:30", now, ZONE, margin=2 * HOUR)
    assert win.last_finish == local(ZONE, datetime(2026, 3, 29, 0, 30)).astimezone(UTC)
