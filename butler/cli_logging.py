"""Logging set-up shared by the ``butler`` and ``pipetask`` command lines (LSST's options).

``--log-level [COMPONENT=]LEVEL`` (repeatable), ``--long-log``, ``--log-file FILE`` (repeatable;
JSON lines when it ends in ``.json``, text otherwise), ``--log-label KEY=VALUE`` (repeatable;
added to every record's ``MDC``, shown by ``--long-log`` and written to JSON log files) and
``--log-tty/--no-log-tty``, as in ``lsst.daf.butler.cli.cliLog``.

Only the standard library is imported, so the commands' ``--help`` stays fast.

Examples
--------
>>> setup_logging(["INFO", "ccdflow.exec=DEBUG"], long_log=True, log_labels=["LABEL=night1"])
... # doctest: +SKIP
"""

from __future__ import annotations

import datetime
import json
import logging
import sys
from collections.abc import Iterable, Mapping, Sequence

__all__ = [
    "LONG_LOG_FORMAT",
    "SHORT_LOG_FORMAT",
    "JsonLogFormatter",
    "MdcFilter",
    "parse_labels",
    "parse_levels",
    "installed_handlers",
    "setup_logging",
]

#: Default console format.
SHORT_LOG_FORMAT = "%(levelname)s %(name)s: %(message)s"
#: ``--long-log`` format (LSST's: level, ISO time, logger, MDC labels, source position, message).
LONG_LOG_FORMAT = "%(levelname)s %(asctime)s %(name)s (%(MDC)s)(%(filename)s:%(lineno)s) - %(message)s"

#: Handlers this module installed (replaced when `setup_logging` is called again).
_INSTALLED: list[logging.Handler] = []
#: Foreign handlers (a host's, e.g. pytest's) given our label filter, to take it off again.
_FOREIGN_FILTERS: list[tuple[logging.Handler, logging.Filter]] = []


class MdcFilter(logging.Filter):
    """Attach a fixed mapping of labels to every record as ``record.MDC`` (a `dict`).

    Parameters
    ----------
    labels : mapping of `str` to `str`
        The ``--log-label`` values.
    """

    def __init__(self, labels: Mapping[str, str]) -> None:
        super().__init__()
        self.labels = dict(labels)

    def filter(self, record: logging.LogRecord) -> bool:
        """Add the labels (records that carry an ``MDC`` already keep their own keys)."""
        mdc = dict(self.labels)
        mdc.update(getattr(record, "MDC", None) or {})
        record.MDC = mdc
        return True


class _MdcText(logging.Formatter):
    """Text formatter printing ``MDC`` as ``{key=value, ...}`` (``{}`` when empty)."""

    def format(self, record: logging.LogRecord) -> str:
        mdc = getattr(record, "MDC", None) or {}
        saved = mdc
        record.MDC = "{" + ", ".join(f"{k}={v}" for k, v in mdc.items()) + "}"
        try:
            return super().format(record)
        finally:
            record.MDC = saved

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        """ISO 8601 UTC time with milliseconds, as LSST's long log."""
        t = datetime.datetime.fromtimestamp(record.created, datetime.UTC)
        return t.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class JsonLogFormatter(logging.Formatter):
    """One JSON object per line with the fields of a ``<label>_log`` record.

    Keys: ``name``, ``levelname``, ``levelno``, ``message``, ``asctime`` (ISO UTC),
    ``filename``, ``lineno``, ``funcName``, ``process``, ``MDC`` and, for exceptions,
    ``exc_info`` (the formatted traceback).
    """

    def format(self, record: logging.LogRecord) -> str:
        """Return the JSON line of one record."""
        entry = {
            "name": record.name,
            "levelname": record.levelname,
            "levelno": record.levelno,
            "message": record.getMessage(),
            "asctime": datetime.datetime.fromtimestamp(record.created, datetime.UTC).isoformat(),
            "filename": record.filename,
            "lineno": record.lineno,
            "funcName": record.funcName,
            "process": record.process,
            "MDC": dict(getattr(record, "MDC", None) or {}),
        }
        if record.exc_info and record.exc_info[0] is not None:
            entry["exc_info"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def installed_handlers() -> list[logging.Handler]:
    """Return the handlers the last `setup_logging` call added to the root logger."""
    return list(_INSTALLED)


def parse_levels(levels: Iterable[str] | str | None) -> list[tuple[str, int]]:
    """Parse ``--log-level`` values.

    Parameters
    ----------
    levels : iterable of `str`, `str` or `None`
        ``LEVEL`` (the root logger) or ``COMPONENT=LEVEL`` entries; a value may also hold
        several comma-separated entries.

    Returns
    -------
    parsed : `list` [`tuple` [`str`, `int`]]
        ``(logger name or "", level number)`` in the given order.

    Raises
    ------
    ValueError
        For an unknown level name (the message lists the valid ones).
    """
    if isinstance(levels, str):
        levels = [levels]
    out = []
    for value in levels or ():
        for item in value.split(","):
            if not item.strip():
                continue
            comp, _, level = item.strip().rpartition("=")
            number = logging.getLevelName(level.upper())
            if level.upper() == "VERBOSE":
                number = logging.INFO - 5
            if not isinstance(number, int):
                raise ValueError(
                    f"unknown log level {level!r} in {item!r}; use CRITICAL, ERROR, WARNING, "
                    "INFO, VERBOSE, DEBUG or TRACE (optionally as COMPONENT=LEVEL)"
                )
            out.append((comp, number))
    return out


def parse_labels(labels: Iterable[str] | None) -> dict[str, str]:
    """Parse ``--log-label KEY=VALUE`` values (each may hold comma-separated pairs).

    Parameters
    ----------
    labels : iterable of `str`

    Returns
    -------
    labels : `dict` [`str`, `str`]

    Raises
    ------
    ValueError
        For an entry without ``=`` or with an empty key.
    """
    out: dict[str, str] = {}
    for value in labels or ():
        for item in value.split(","):
            key, eq, val = item.partition("=")
            if not eq or not key.strip():
                raise ValueError(f"--log-label {item!r} is not of the form KEY=VALUE (e.g. LABEL=night1)")
            out[key.strip().upper()] = val.strip()
    return out


def setup_logging(
    levels: Iterable[str] | str | None = None,
    log_file: Sequence[str] | str | None = None,
    *,
    long_log: bool = False,
    log_labels: Iterable[str] | Mapping[str, str] | None = None,
    log_tty: bool = True,
    default_level: int = logging.INFO,
) -> None:
    """Configure the root logger for a command-line run.

    Parameters
    ----------
    levels : iterable of `str`, `str` or `None`
        ``--log-level`` values (see `parse_levels`).
    log_file : `str` or sequence of `str`, optional
        Files receiving every record: JSON lines (`JsonLogFormatter`) when the name ends in
        ``.json``, else text in the ``--long-log`` format.
    long_log : `bool`
        Console records in `LONG_LOG_FORMAT` instead of `SHORT_LOG_FORMAT`.
    log_labels : iterable of `str` or mapping, optional
        ``--log-label KEY=VALUE`` values, added to every record's ``MDC``.
    log_tty : `bool`
        Log to the terminal (stderr); ``--no-log-tty`` keeps only the files.
    default_level : `int`
        Root level when ``levels`` does not set it.

    Raises
    ------
    ValueError
        For an unknown level or a malformed label (see `parse_levels`, `parse_labels`).
    """
    parsed = parse_levels(levels)
    labels = dict(log_labels) if isinstance(log_labels, Mapping) else parse_labels(log_labels)
    root = logging.getLogger()
    for handler in _INSTALLED:
        root.removeHandler(handler)
        handler.close()
    _INSTALLED.clear()
    for handler, old_filter in _FOREIGN_FILTERS:  # labels of an earlier call must not stay behind
        handler.removeFilter(old_filter)
    _FOREIGN_FILTERS.clear()
    mdc = MdcFilter(labels)
    handlers: list[logging.Handler] = []
    own_console = log_tty and not [h for h in root.handlers if h not in _INSTALLED]
    if own_console:
        console = logging.StreamHandler(sys.stderr)
        console.setFormatter(_MdcText(LONG_LOG_FORMAT if long_log else SHORT_LOG_FORMAT))
        handlers.append(console)
    elif long_log:
        for h in root.handlers:  # e.g. pytest's capture handler: only switch the format
            h.setFormatter(_MdcText(LONG_LOG_FORMAT))
            h.addFilter(mdc)
            _FOREIGN_FILTERS.append((h, mdc))
    files = [log_file] if isinstance(log_file, str) else list(log_file or ())
    for name in files:
        fh = logging.FileHandler(name, encoding="utf-8")
        fh.setFormatter(JsonLogFormatter() if name.endswith(".json") else _MdcText(LONG_LOG_FORMAT))
        handlers.append(fh)
    for h in handlers:
        h.addFilter(mdc)
        root.addHandler(h)
        _INSTALLED.append(h)
    if not log_tty:
        for h in list(root.handlers):
            if (
                isinstance(h, logging.StreamHandler)
                and not isinstance(h, logging.FileHandler)
                and getattr(h, "stream", None) in (sys.stderr, sys.stdout)
            ):
                root.removeHandler(h)
    root.setLevel(default_level)
    for comp, number in parsed:
        (logging.getLogger(comp) if comp else root).setLevel(number)
