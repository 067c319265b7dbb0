"""Times, the one way Loyal reads them: every time is UTC, and a naive one is taken to be UTC already (as the
canonical contract says); a day is the UTC midnight that starts it (snapshots, cutoffs, campaign dates)."""

from __future__ import annotations

import pandas as pd


def utc(moment) -> pd.Timestamp:
    """`moment` (a date, a time, a string) as a UTC timestamp; naive times are UTC."""
    moment = pd.Timestamp(moment)
    return moment.tz_localize("UTC") if moment.tzinfo is None else moment.tz_convert("UTC")


def midnight(moment) -> pd.Timestamp:
    """The UTC midnight that starts the day of `moment`."""
    return utc(moment).floor("D")
