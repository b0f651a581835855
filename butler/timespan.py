"""Half-open TAI time intervals and their integer encoding in the registry.

A time is stored as an integer number of TAI nanoseconds since 1970-01-01T00:00:00 TAI. A
`Timespan` is stored as two BIGINT columns ``<name>_begin`` and ``<name>_end``; an unbounded
begin is ``-(2**62)`` and an unbounded end is ``2**62``, so the overlap of two stored spans is
``a.begin < b.end AND b.begin < a.end`` with no NULL handling. astropy is imported only when a
`~astropy.time.Time` is actually built or read, so importing this module is cheap.
"""

from __future__ import annotations

import datetime
import re
from functools import total_ordering
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Mapping

    from astropy.time import Time

__all__ = [
    "NS_PER_DAY",
    "TIMESPAN_MAX",
    "TIMESPAN_MIN",
    "Timespan",
    "iso_tai_to_ns",
    "ns_to_isot",
    "ns_to_time",
    "parse_time",
    "time_to_ns",
    "timespan_from_ns",
    "timespan_to_ns",
]

NS_PER_DAY = 86_400 * 1_000_000_000
TIMESPAN_MIN = -(2**62)
"""Stored value of an unbounded ``begin``."""
TIMESPAN_MAX = 2**62
"""Stored value of an unbounded ``end``."""

_EPOCH_JD1 = 2440588.0  # 1970-01-01T00:00:00 as jd1 + jd2 (jd2 = -0.5)
_EPOCH_JD2 = -0.5
_EPOCH_ORDINAL = datetime.date(1970, 1, 1).toordinal()
_NS_PER_MS = 1_000_000
#: ISO 8601 date or date-time as `parse_time` reads it without astropy (at most 9 decimals).
_ISO_TAI = (  # compiled on first use (re's cache): ~5 ms at import otherwise
    r"(?P<y>\d{4})-(?P<m>\d{2})-(?P<d>\d{2})"
    r"(?:[T ](?P<H>\d{2}):(?P<M>\d{2})(?::(?P<S>\d{2})(?:\.(?P<f>\d{1,9}))?)?)?\Z"
)


def ns_to_isot(ns: int) -> str:
    """Format integer TAI nanoseconds as astropy's TAI ``isot`` string, without astropy.

    TAI days are all 86,400 s long, so the calendar date and time of day follow from integer
    division; the seconds are rounded to the millisecond as astropy's ``Time.isot`` does (an
    exact half millisecond, which astropy's floating point rounds either way, rounds up).

    Parameters
    ----------
    ns : `int`
        TAI nanoseconds since 1970-01-01T00:00:00 TAI.

    Returns
    -------
    isot : `str`
        ``YYYY-MM-DDTHH:MM:SS.sss``, equal to ``ns_to_time(ns).isot`` (years 1-9999; other
        years are formatted by astropy).
    """
    ms = (int(ns) + _NS_PER_MS // 2) // _NS_PER_MS
    days, ms_of_day = divmod(ms, 86_400_000)
    ordinal = _EPOCH_ORDINAL + days
    if not 1 <= ordinal <= 3_652_059:  # outside datetime's years 1-9999
        return str(ns_to_time(ns).isot)
    date = datetime.date.fromordinal(ordinal)
    seconds, milli = divmod(ms_of_day, 1000)
    minutes, sec = divmod(seconds, 60)
    hour, minute = divmod(minutes, 60)
    return f"{date.year:04d}-{date.month:02d}-{date.day:02d}T{hour:02d}:{minute:02d}:{sec:02d}.{milli:03d}"


def iso_tai_to_ns(text: str) -> int | None:
    """Read an ISO 8601 TAI date or date-time exactly, without astropy.

    Parameters
    ----------
    text : `str`
        ``YYYY-MM-DD``, ``YYYY-MM-DDTHH:MM``, ``YYYY-MM-DDTHH:MM:SS[.fffffffff]`` (``T`` or a
        space between date and time).

    Returns
    -------
    ns : `int` or `None`
        TAI nanoseconds since 1970-01-01T00:00:00 TAI, or `None` when ``text`` is not of that
        form or not a valid date and time (`parse_time` then asks astropy, which reads more
        forms and words the error).
    """
    m = re.match(_ISO_TAI, text)
    if m is None:
        return None
    hours, minutes, seconds = int(m["H"] or 0), int(m["M"] or 0), int(m["S"] or 0)
    if hours > 23 or minutes > 59 or seconds > 59:
        return None
    try:
        days = datetime.date(int(m["y"]), int(m["m"]), int(m["d"])).toordinal() - _EPOCH_ORDINAL
    except ValueError:
        return None
    frac = int((m["f"] or "0").ljust(9, "0"))
    return days * NS_PER_DAY + ((hours * 60 + minutes) * 60 + seconds) * 1_000_000_000 + frac


def time_to_ns(time: Time) -> int:
    """Convert an astropy time to integer TAI nanoseconds since 1970-01-01T00:00:00 TAI.

    Parameters
    ----------
    time : `astropy.time.Time`
        A scalar time in any scale; it is converted to TAI.

    Returns
    -------
    ns : `int`
        TAI nanoseconds since the epoch (exact to well below 1 ns for dates in 1900-2200).

    Raises
    ------
    TypeError
        If ``time`` is not a scalar `~astropy.time.Time`.
    """
    from astropy.time import Time

    if not isinstance(time, Time) or not time.isscalar:
        raise TypeError(f"expected a scalar astropy Time, got {time!r}")
    tai = time.tai
    d1 = float(tai.jd1) - _EPOCH_JD1
    d2 = float(tai.jd2) - _EPOCH_JD2
    whole = int(d1)  # jd1 is integral or half-integral; keep the integer part exact
    frac = (d1 - whole) + d2
    return whole * NS_PER_DAY + round(frac * NS_PER_DAY)


def ns_to_time(ns: int) -> Time:
    """Convert integer TAI nanoseconds since 1970-01-01T00:00:00 TAI back to an astropy time.

    Parameters
    ----------
    ns : `int`
        TAI nanoseconds since the epoch.

    Returns
    -------
    time : `astropy.time.Time`
        The time, scale ``tai``, format ``isot``.
    """
    from astropy.time import Time

    days, rem = divmod(int(ns), NS_PER_DAY)
    return Time(_EPOCH_JD1 + days, _EPOCH_JD2 + rem / NS_PER_DAY, format="jd", scale="tai").replicate(
        format="isot"
    )


def parse_time(value: Any, *, scale: str = "tai") -> Time:
    """Interpret a user-supplied time (ISO string, `~astropy.time.Time`, `datetime`).

    Parameters
    ----------
    value : `str`, `astropy.time.Time` or `datetime.datetime`
        The time. Strings are ISO 8601 (``2022-01-26T19:00:00`` or ``2022-01-26``).
    scale : `str`, optional
        Time scale of a string or naive datetime (default TAI, as `certify-calibrations` uses).

    Returns
    -------
    time : `astropy.time.Time`

    Raises
    ------
    ValueError
        If the string is not a valid time; the message quotes it.
    """
    from astropy.time import Time

    if isinstance(value, Time):
        return value
    try:
        return Time(value, scale=scale)
    except Exception:  # astropy raises several types for bad strings
        raise ValueError(
            f"{value!r} is not a valid time; use ISO 8601, e.g. 2022-01-26T19:00:00 ({scale.upper()})"
        ) from None


@total_ordering
class Timespan:
    """A half-open TAI interval ``[begin, end)``; `None` means unbounded on that side.

    Parameters
    ----------
    begin, end : `astropy.time.Time` or `None`
        Inclusive start and exclusive end. `None` is unbounded.

    Raises
    ------
    ValueError
        If ``end`` is before ``begin``.

    Notes
    -----
    Internally the bounds are TAI nanosecond integers (`time_to_ns`), so comparisons and overlap
    tests never touch astropy; `begin` and `end` build `~astropy.time.Time` objects on demand.
    """

    __slots__ = ("_begin_ns", "_end_ns")

    def __init__(self, begin: Time | None, end: Time | None) -> None:
        b = TIMESPAN_MIN if begin is None else time_to_ns(begin)
        e = TIMESPAN_MAX if end is None else time_to_ns(end)
        self._set(b, e)

    def _set(self, b: int, e: int) -> None:
        if e < b:
            raise ValueError(f"timespan end {ns_to_time(e).isot} is before its begin {ns_to_time(b).isot}")
        self._begin_ns = int(b)
        self._end_ns = int(e)

    @classmethod
    def from_ns(cls, begin_ns: int | None, end_ns: int | None) -> Timespan:
        """Build a timespan from stored integers (`None` or the sentinels mean unbounded).

        Parameters
        ----------
        begin_ns, end_ns : `int` or `None`
            TAI nanoseconds since 1970-01-01 TAI.

        Returns
        -------
        timespan : `Timespan`
        """
        self = cls.__new__(cls)
        self._set(TIMESPAN_MIN if begin_ns is None else begin_ns, TIMESPAN_MAX if end_ns is None else end_ns)
        return self

    @classmethod
    def from_strings(cls, begin: str | None, end: str | None, *, scale: str = "tai") -> Timespan:
        """Build a timespan from ISO strings (TAI by default); `None` or ``""`` is unbounded.

        Plain ISO TAI strings are read exactly without astropy (`iso_tai_to_ns`); other forms and
        scales go through `parse_time`.
        """

        def to_ns(text: str | None, unbounded: int) -> int:
            if not text:
                return unbounded
            ns = iso_tai_to_ns(text) if scale == "tai" and isinstance(text, str) else None
            return time_to_ns(parse_time(text, scale=scale)) if ns is None else ns

        return cls.from_ns(to_ns(begin, TIMESPAN_MIN), to_ns(end, TIMESPAN_MAX))

    @property
    def begin_ns(self) -> int:
        """Stored begin (``TIMESPAN_MIN`` when unbounded)."""
        return self._begin_ns

    @property
    def end_ns(self) -> int:
        """Stored end (``TIMESPAN_MAX`` when unbounded)."""
        return self._end_ns

    @property
    def begin(self) -> Time | None:
        """Inclusive begin as TAI `~astropy.time.Time`, or `None` if unbounded."""
        return None if self._begin_ns <= TIMESPAN_MIN else ns_to_time(self._begin_ns)

    @property
    def end(self) -> Time | None:
        """Exclusive end as TAI `~astropy.time.Time`, or `None` if unbounded."""
        return None if self._end_ns >= TIMESPAN_MAX else ns_to_time(self._end_ns)

    def overlaps(self, other: Timespan | Time) -> bool:
        """Whether two half-open spans share any instant (or this span contains a time)."""
        if not isinstance(other, Timespan):
            return self.contains(other)
        return self._begin_ns < other._end_ns and other._begin_ns < self._end_ns

    def contains(self, time: Time | Timespan) -> bool:
        """Whether a time lies in ``[begin, end)`` (or a span lies entirely inside this one)."""
        if isinstance(time, Timespan):
            return self._begin_ns <= time._begin_ns and time._end_ns <= self._end_ns
        t = time_to_ns(time)
        return self._begin_ns <= t < self._end_ns

    def difference(self, other: Timespan) -> list[Timespan]:
        """Return the parts of this span not covered by ``other`` (0, 1 or 2 spans)."""
        out = []
        if other._begin_ns > self._begin_ns:
            out.append(Timespan.from_ns(self._begin_ns, min(other._begin_ns, self._end_ns)))
        if other._end_ns < self._end_ns:
            out.append(Timespan.from_ns(max(other._end_ns, self._begin_ns), self._end_ns))
        return [t for t in out if t._end_ns > t._begin_ns]

    def to_dict(self) -> dict[str, str | None]:
        """JSON-able form: ISO TAI strings (astropy's ``isot``, `ns_to_isot`), `None` for unbounded."""
        b, e = self._begin_ns, self._end_ns
        return {
            "begin": None if b <= TIMESPAN_MIN else ns_to_isot(b),
            "end": None if e >= TIMESPAN_MAX else ns_to_isot(e),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, str | None]) -> Timespan:
        """Inverse of `to_dict`."""
        return cls.from_strings(d.get("begin"), d.get("end"))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Timespan):
            return NotImplemented
        return (self._begin_ns, self._end_ns) == (other._begin_ns, other._end_ns)

    def __lt__(self, other: Timespan) -> bool:
        return (self._begin_ns, self._end_ns) < (other._begin_ns, other._end_ns)

    def __hash__(self) -> int:
        return hash((self._begin_ns, self._end_ns))

    def __repr__(self) -> str:
        d = self.to_dict()
        return f"Timespan({d['begin'] or '-inf'}, {d['end'] or '+inf'})"


def timespan_to_ns(timespan: Timespan | None) -> tuple[int, int]:
    """Return the stored ``(begin, end)`` integers of a timespan (`None` = fully unbounded)."""
    if timespan is None:
        return TIMESPAN_MIN, TIMESPAN_MAX
    return timespan.begin_ns, timespan.end_ns


def timespan_from_ns(begin: int | None, end: int | None) -> Timespan:
    """Return the `Timespan` of stored ``(begin, end)`` integers."""
    return Timespan.from_ns(begin, end)
