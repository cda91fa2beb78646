"""What each rule measures: its value for each subject, read from the activity counts.

Windows read the activity buckets (gateway/activity.py) of the finest unit their length
allows: 5 s buckets up to 10 minutes, minutes up to 26 hours, hours up to 8 days. A window
of n buckets is the n newest, the current (partial) one included, so it covers between
n-1 and n buckets' time. Only the fields the rules need are read (HMGET), and a long window
of minutes reads whole hours from the hourly counts.
"""

from __future__ import annotations

import asyncio
import itertools
import math
from collections.abc import Iterable
from dataclasses import dataclass

from ..activity import UNITS, Series, series
from ..config import ALERT_WINDOW_UNITS, AlertRule, Config
from ..replay import partition_lag
from ..store import Store

USUAL_HISTORY = 7 * 24  # hours of a source's own history `longer_than: usual` looks at
USUAL_LEAST = 24  # hours of history it needs before it judges at all
_UNIT_NAMES = {5: "s", 60: "m", 3600: "h"}


@dataclass(frozen=True)
class Reading:
    """One rule's measure of one subject now."""

    rule: AlertRule
    subject: str
    value: float | None  # None: nothing to measure (no attempts, too little history)
    threshold: float
    breached: bool


def subjects(rule: AlertRule, config: Config) -> list[str]:
    """What a rule watches, one incident each: destinations, sources, or redis."""
    if rule.when == "redis_unavailable":
        return ["redis"]
    kind = "source" if rule.source is not None else "destination"
    chosen = getattr(rule, kind)
    names = config.sources if kind == "source" else config.destinations
    return sorted(names) if chosen == "*" else [chosen]


def unit_of(seconds: float) -> tuple[str, int, int]:
    """(activity unit, its seconds, buckets) that cover `seconds`."""
    for longest, unit in ALERT_WINDOW_UNITS:
        if seconds <= longest:
            return _UNIT_NAMES[unit], unit, max(1, math.ceil(seconds / unit))
    raise ValueError(f"a window of {seconds} s is longer than the activity counts are kept")


def _span(rule: AlertRule) -> float:
    if rule.when == "source_silent":
        silent = rule.silent_after()
        return silent if silent is not None else USUAL_HISTORY * 3600
    return float(rule.window)


Span = tuple[str, int]  # (activity unit, buckets): what one window reads
_OUTCOMES = {
    "destination_failure_rate": ("retried", "dead_lettered", "sent"),
    "dead_letters": ("dead_lettered",),
    "source_silent": ("accepted",),
}


def span_of(rule: AlertRule) -> Span:
    unit, _, n = unit_of(_span(rule))
    return unit, n


def needs(rules: Iterable[AlertRule], config: Config) -> dict[Span, list[str] | None]:
    """The activity fields ("<kind>|<name>|<outcome>") each window of `rules` needs; None:
    all of them (quarantine: its stages are open-ended)."""
    out: dict[Span, set[str] | None] = {}
    for rule in rules:
        if rule.when in ("lag", "redis_unavailable"):
            continue
        span = span_of(rule)
        have = out.setdefault(span, set())
        if rule.when not in _OUTCOMES or have is None:
            out[span] = None
            continue
        kind = "source" if rule.source is not None else "destination"
        have.update(
            f"{kind}|{subject}|{outcome}"
            for subject in subjects(rule, config)
            for outcome in _OUTCOMES[rule.when]
        )
    return {span: None if f is None else sorted(f) for span, f in out.items()}


# A window of many minutes reads whole hours from the hourly counts (each is the sum of its
# minutes: one flush adds to both) and minutes only at its two ends: a day is 23 hours and
# at most 118 minutes instead of 1,440 minutes. (source_silent needs the newest busy
# minute: it reads minutes, only its one field.) Reads go CHUNK buckets at a time, so the
# replies are parsed in slices between which the event loop serves webhooks.
FOLD_AFTER = 180  # minutes
CHUNK = 240  # buckets per read


async def window(
    store: Store, unit: str, n: int, now: float, fields: list[str] | None, fold: bool = True
) -> Series:
    """The counts of the n newest buckets of `unit` (`fields` only, unless None)."""
    if unit == "m" and n > FOLD_AFTER and fold:
        return await _folded(store, n, now, fields)
    seconds = UNITS[unit]
    last = int(now // seconds)
    out = Series(seconds, last - n + 1, n)
    done = 0
    while done < n:
        size = min(CHUNK, n - done)
        part = await series(store, unit, size, (last - n + done + size) * seconds, fields)
        _add(out, part, done)
        done += size
        await asyncio.sleep(0)
    return out


async def _folded(store: Store, n: int, now: float, fields: list[str] | None) -> Series:
    last = int(now // 60)
    first = last - n + 1
    out = Series(60, first, n)
    low, high = -(-first // 60), (last + 1) // 60 - 1  # the whole hours in the window
    head = await window(store, "m", low * 60 - first, (low * 60 - 1) * 60, fields, False)
    _add(out, head, 0)
    hours = await window(store, "h", high - low + 1, high * 3600, fields)
    for key, row in hours.values.items():
        mine = out.values.setdefault(key, [0] * n)
        for i, count in enumerate(row):
            mine[(low + i) * 60 - first] += count
    tail = await window(store, "m", last - (high + 1) * 60 + 1, now, fields, False)
    _add(out, tail, (high + 1) * 60 - first)
    return out


def _add(out: Series, part: Series, at: int) -> None:
    """Put `part`'s rows into `out`'s from bucket `at` on."""
    for key, row in part.values.items():
        mine = out.values.setdefault(key, [0] * out.buckets)
        for i, count in enumerate(row, at):
            mine[i] += count


async def read(config: Config, store: Store, now: float) -> list[Reading]:
    """Every rule's reading for every subject (redis_unavailable aside: not from Redis)."""
    rules = [r for r in config.alerts.rules if r.when != "redis_unavailable"]
    silent = {span_of(r) for r in rules if r.when == "source_silent"}
    counts = {
        span: await window(store, *span, now, fields, fold=span not in silent)
        for span, fields in needs(rules, config).items()
    }
    behind: dict[str, int] = {}
    if any(r.when == "lag" for r in rules):
        for row in await partition_lag(config, store):
            behind[row.destination] = behind.get(row.destination, 0) + (row.lag or 0) + row.pending
    return [
        measure(rule, subject, counts, behind, now)
        for rule in rules
        for subject in subjects(rule, config)
    ]


def measure(
    rule: AlertRule, subject: str, counts: dict[Span, Series], behind: dict[str, int], now: float
) -> Reading:
    """A rule's value for one subject from the counts read (pure: no I/O, no clock)."""
    above = rule.above or 0.0
    if rule.when == "lag":
        value = float(behind.get(subject, 0))
        return Reading(rule, subject, value, above, value > above)
    if rule.when == "source_silent":
        return _silence(rule, subject, counts, now)
    unit, _, n = unit_of(float(rule.window))
    s = counts[(unit, n)]
    if rule.when == "destination_failure_rate":
        failed = s.total("destination", subject, "retried", n) + s.total(
            "destination", subject, "dead_lettered", n
        )
        attempts = failed + s.total("destination", subject, "sent", n)
        if not attempts:
            return Reading(rule, subject, None, above, False)
        rate = failed / attempts
        return Reading(rule, subject, rate, above, attempts >= rule.min_events and rate > above)
    if rule.when == "dead_letters":
        value = float(s.total("destination", subject, "dead_lettered", n))
    else:  # quarantine: every stage of the source
        tail = slice(-n, None)
        value = float(
            sum(
                sum(v[tail])
                for (kind, name, _), v in s.values.items()
                if kind == "quarantine" and name == subject
            )
        )
    return Reading(rule, subject, value, above, value > above)


def _silence(rule: AlertRule, subject: str, counts: dict[Span, Series], now: float) -> Reading:
    """Seconds since the source last accepted a delivery, against longer_than (or usual)."""
    fixed = rule.silent_after()
    unit, seconds, n = unit_of(fixed if fixed is not None else USUAL_HISTORY * 3600)
    s = counts[(unit, n)]
    row = s.of("source", subject, "accepted")[-n:]
    first = s.first + s.buckets - n  # the number of row[0]'s bucket
    busy = [i for i, count in enumerate(row) if count]
    if fixed is not None:
        if not busy:  # nothing in the whole span: silent at least that long
            return Reading(rule, subject, fixed, fixed, True)
        silent = max(0.0, now - (first + busy[-1] + 1) * seconds)
        return Reading(rule, subject, silent, fixed, False)
    usual = usual_silence(row)
    if usual is None or not busy:
        return Reading(rule, subject, None, 0.0, False)
    silent = max(0.0, now - (first + busy[-1] + 1) * seconds)
    return Reading(rule, subject, silent, usual, silent > usual)


def usual_silence(hours: list[int]) -> float | None:
    """`longer_than: usual` in seconds from a source's hourly accepted counts (oldest
    first): twice the longest run of silent hours between two busy hours, at least 1 h.
    None while the source's history is under USUAL_LEAST hours."""
    busy = [i for i, count in enumerate(hours) if count]
    if len(busy) < 2 or len(hours) - busy[0] < USUAL_LEAST:
        return None
    longest = max(b - a - 1 for a, b in itertools.pairwise(busy))
    return max(1, 2 * longest) * 3600.0
