"""One way to read a time: UTC, a naive time taken as UTC, a day as the UTC midnight that starts it."""

from __future__ import annotations

from datetime import date, datetime, timezone

import pandas as pd

from loyal.dates import midnight, utc


def test_a_naive_time_is_utc_and_an_aware_one_is_converted():
    assert utc("2011-12-09 12:50") == pd.Timestamp("2011-12-09 12:50", tz="UTC")
    assert utc(pd.Timestamp("2011-12-09 12:50", tz="Europe/London")) == pd.Timestamp("2011-12-09 12:50", tz="UTC")
    assert utc(pd.Timestamp("2011-06-09 12:50", tz="Europe/London")) == pd.Timestamp("2011-06-09 11:50", tz="UTC")


def test_a_day_is_the_utc_midnight_that_starts_it():
    expected = pd.Timestamp("2011-12-09", tz="UTC")
    for moment in ("2011-12-09", "2011-12-09T23:59:59", date(2011, 12, 9), datetime(2011, 12, 9, 7, tzinfo=timezone.utc),
                   pd.Timestamp("2011-12-10 00:30", tz="Europe/Paris")):
        assert midnight(moment) == expected, moment
