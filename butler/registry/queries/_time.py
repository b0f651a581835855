"""Time literals ``T'[format/]value[/scale]'`` → integer TAI nanoseconds since 1970-01-01 TAI.

ISO dates/date-times and MJD/JD in TAI (the default scale) are converted exactly with integer
arithmetic, without importing astropy; any other scale or format goes through
`astropy.time.Time` and :func:`butler.timespan.time_to_ns`.
"""

from __future__ import annotations

import datetime
import re
from decimal import Decimal, InvalidOperation

from ...timespan import TIMESPAN_MAX, TIMESPAN_MIN, time_to_ns

__all__ = ["TimeLiteralError", "mjd_tai_to_ns", "parse_time_literal", "tai_ns_to_utc_datetime"]

NS_PER_DAY = 86_400 * 1_000_000_000
_MJD_EPOCH_1970 = 40587  # MJD of 1970-01-01
_EPOCH_ORDINAL = datetime.date(1970, 1, 1).toordinal()

FORMATS = ("isot", "iso", "fits", "mjd", "jd", "unix", "unix_tai")
SCALES = ("tai", "utc", "tt", "ut1", "tcg", "tcb", "tdb")

# Patterns, compiled on first use (re's cache): compiling them cost ~5 ms at import.
_ISO = (
    r"(?P<y>\d{4})-(?P<m>\d{2})-(?P<d>\d{2})"
    r"(?:[T ](?P<H>\d{2}):(?P<M>\d{2})(?::(?P<S>\d{2})(?:\.(?P<f>\d{1,9})\d*)?)?)?\Z"
)
_NUMBER = r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\Z"


class TimeLiteralError(ValueError):
    """A time literal's text is not a valid time (the parser adds the caret)."""


def mjd_tai_to_ns(mjd: float | int | Decimal | str) -> int:
    """Convert an MJD in TAI to integer TAI nanoseconds since 1970-01-01T00:00:00 TAI.

    Parameters
    ----------
    mjd : `float`, `int`, `~decimal.Decimal` or `str`
        Modified Julian Date (days), TAI scale.

    Returns
    -------
    ns : `int`
        Exact for decimal input; floats are converted through their shortest repr.
    """
    value = mjd if isinstance(mjd, Decimal) else Decimal(str(mjd))
    return int(((value - _MJD_EPOCH_1970) * NS_PER_DAY).to_integral_value())


def _iso_tai_to_ns(m: re.Match[str]) -> int:
    date = datetime.date(int(m["y"]), int(m["m"]), int(m["d"]))
    hours = int(m["H"] or 0)
    minutes = int(m["M"] or 0)
    seconds = int(m["S"] or 0)
    if hours > 23 or minutes > 59 or seconds > 59:
        raise TimeLiteralError("hour, minute or second out of range")
    frac = int((m["f"] or "0").ljust(9, "0"))
    days = date.toordinal() - _EPOCH_ORDINAL
    return days * NS_PER_DAY + ((hours * 60 + minutes) * 60 + seconds) * 1_000_000_000 + frac


def _split(body: str) -> tuple[str | None, str, str]:
    parts = body.strip().split("/")
    if len(parts) > 3:
        raise TimeLiteralError("expected [format/]value[/scale]")
    fmt: str | None = None
    scale: str | None = None
    if len(parts) == 3:
        fmt, value, scale = parts
    elif len(parts) == 2:
        if parts[0].strip().lower() in FORMATS:
            fmt, value = parts
        else:
            value, scale = parts
    else:
        (value,) = parts
    if scale is None:
        # POSIX time counts UTC seconds; everything else defaults to TAI
        scale = "utc" if fmt is not None and fmt.strip().lower() == "unix" else "tai"
    scale = scale.strip().lower()
    value = value.strip()
    if value[-1:] in ("Z", "z") and re.match(_ISO, value[:-1]):
        # ISO 8601 "Z" (Zulu) means UTC
        if len(parts) == 3 or (len(parts) == 2 and parts[0].strip().lower() not in FORMATS):
            if scale != "utc":
                raise TimeLiteralError(f"{value!r} ends in Z (UTC) but the scale says {scale!r}")
        value, scale = value[:-1], "utc"
    elif re.search(r"T\d\d:\d\d(:\d\d(\.\d+)?)?[+-]\d\d:?\d\d\Z", value):
        raise TimeLiteralError(
            f"{value!r} has a UTC offset; write the time in TAI (default) or UTC with /utc, "
            "e.g. 2022-01-26T19:00:00/utc"
        )
    if scale not in SCALES:
        raise TimeLiteralError(f"unknown time scale {scale!r}; expected one of {', '.join(SCALES)}")
    if fmt is not None:
        fmt = fmt.strip().lower()
        if fmt not in FORMATS:
            raise TimeLiteralError(f"unknown time format {fmt!r}; expected one of {', '.join(FORMATS)}")
    return fmt, value, scale


def parse_time_literal(body: str) -> int:
    """Convert the text inside ``T'...'`` to integer TAI nanoseconds since 1970-01-01 TAI.

    Parameters
    ----------
    body : `str`
        ``[format/]value[/scale]``, e.g. ``2022-01-26T19:00:00``, ``mjd/59605.5``,
        ``2022-01-26T19:00:00/utc``, ``isot/2025-01-01T20:00:00/tai``. The scale defaults to
        **TAI** (UTC for ``unix``, which counts POSIX seconds); the format is guessed when
        absent (ISO 8601 date or date-time, or a number = MJD).

    Returns
    -------
    ns : `int`
        TAI nanoseconds since 1970-01-01T00:00:00 TAI.

    Raises
    ------
    TimeLiteralError
        If the format, scale or value is invalid, or the time is outside the storable range
        (about 1824-2116).
    """
    fmt, value, scale = _split(body)
    if not value:
        raise TimeLiteralError("empty time; expected e.g. T'2022-01-26T19:00:00'")
    if fmt is None:
        if re.match(_ISO, value):
            fmt = "isot"
        elif re.match(_NUMBER, value):
            fmt = "mjd"
        else:
            raise TimeLiteralError(
                f"cannot read {value!r} as a time; expected ISO 8601 (2022-01-26T19:00:00) or an MJD"
            )
    ns: int
    if scale == "tai" and fmt in ("isot", "iso", "fits"):
        m = re.match(_ISO, value)
        if m is None:
            raise TimeLiteralError(f"{value!r} is not an ISO 8601 date or date-time (2022-01-26T19:00:00)")
        try:
            ns = _iso_tai_to_ns(m)
        except ValueError as exc:
            raise TimeLiteralError(str(exc)) from None
    elif scale == "tai" and fmt in ("mjd", "jd"):
        try:
            number = Decimal(value)
        except InvalidOperation:
            raise TimeLiteralError(f"{value!r} is not a number") from None
        if not number.is_finite():
            raise TimeLiteralError(f"{value!r} is not a finite number")
        ns = mjd_tai_to_ns(number - Decimal("2400000.5") if fmt == "jd" else number)
    else:
        ns = _astropy_to_ns(value, fmt, scale)
    if not TIMESPAN_MIN < ns < TIMESPAN_MAX:
        raise TimeLiteralError(f"{value!r} is outside the storable time range (about 1824-2116)")
    return ns


def _astropy_to_ns(value: str, fmt: str, scale: str) -> int:
    from astropy.time import Time

    astropy_value: str | float = value
    if fmt in ("mjd", "jd", "unix", "unix_tai"):
        try:
            astropy_value = float(value)
        except ValueError:
            raise TimeLiteralError(f"{value!r} is not a number") from None
    elif fmt == "isot" and " " in value:
        fmt = "iso"
    elif fmt == "iso" and "T" in value:
        fmt = "isot"
    try:
        time = Time(astropy_value, format=fmt, scale=scale)
    except Exception as exc:  # astropy raises ValueError and others for bad input
        raise TimeLiteralError(f"{value!r} is not a valid {fmt} time in {scale}: {exc}") from None
    return time_to_ns(time)


def tai_ns_to_utc_datetime(ns: int) -> datetime.datetime:
    """Convert TAI nanoseconds since 1970 TAI to a naive UTC `datetime.datetime`.

    Used to compare time literals with ``datetime`` columns (e.g. ``ingest_date``), which
    hold naive UTC. Leap seconds come from astropy.
    """
    import warnings

    from astropy.time import Time

    days, rem = divmod(int(ns), NS_PER_DAY)
    with warnings.catch_warnings():
        # ERFA warns "dubious year" outside the leap-second table (future dates); the
        # conversion then uses the last known TAI-UTC offset, which is what we want.
        warnings.simplefilter("ignore")
        t = Time(2440588.0 + days, -0.5 + rem / NS_PER_DAY, format="jd", scale="tai")
        return t.utc.to_datetime()
