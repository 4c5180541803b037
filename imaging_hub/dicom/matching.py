"""DICOM attribute matching (PS3.4 C.2.2.2) as SQLAlchemy conditions, for QIDO-RS and C-FIND.

Each function takes the raw query value as the client sent it and returns a condition on a
column, or ``None`` for universal matching (the attribute places no constraint). Bad values
raise a ``ValueError`` (``InvalidUid`` for UIDs) whose message says what is wrong.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from typing import Any

from sqlalchemy import ColumnElement, and_, or_
from sqlalchemy.orm import InstrumentedAttribute

from imaging_hub.dicom.keys import normalize_pn, normalize_text
from imaging_hub.dicom.uids import validate_uid

__all__ = [
    "LIKE_ESCAPE",
    "date_condition",
    "has_wildcards",
    "is_universal",
    "like_pattern",
    "multi_value_condition",
    "parse_date_range",
    "pn_condition",
    "string_condition",
    "text_condition",
    "uid_list_condition",
]

#: Escape character of every LIKE pattern built here (never a character DICOM gives meaning to).
LIKE_ESCAPE = "!"

Column = InstrumentedAttribute[Any] | ColumnElement[Any]
Condition = ColumnElement[bool]

_DATE_RE = re.compile(r"\d{8}")
_CS_RE = re.compile(r"[A-Z0-9_ ]{1,16}")


def is_universal(value: str | None) -> bool:
    """Tell whether a value matches anything: absent, empty or a lone ``*`` (PS3.4 C.2.2.2.3)."""
    return value is None or value.strip(" ") in ("", "*")


def has_wildcards(value: str) -> bool:
    """Tell whether a value asks for wild card matching with ``*`` or ``?`` (PS3.4 C.2.2.2.4)."""
    return "*" in value or "?" in value


def like_pattern(value: str) -> str:
    """Translate a DICOM wild card value into a LIKE pattern escaped with LIKE_ESCAPE."""
    out = []
    for char in value:
        if char == "*":
            out.append("%")
        elif char == "?":
            out.append("_")
        elif char in ("%", "_", LIKE_ESCAPE):
            out.append(LIKE_ESCAPE + char)
        else:
            out.append(char)
    return "".join(out)


def string_condition(
    column: Column,
    value: str | None,
    *,
    normalize: Callable[[str], str | None] | None = None,
) -> Condition | None:
    """Single value or wild card matching of a string attribute (PS3.4 C.2.2.2.1, C.2.2.2.4).

    ``normalize`` maps the query value to the form the column stores (e.g. upper case for the
    ``*_norm`` columns); ``*`` and ``?`` pass through it unchanged.
    """
    if is_universal(value):
        return None
    assert value is not None
    text = value.strip(" ")
    if normalize is not None:
        text = normalize(text) or ""
        if not text:
            return None
    if has_wildcards(text):
        return column.like(like_pattern(text), escape=LIKE_ESCAPE)
    return column == text


def pn_condition(norm_column: Column, value: str | None) -> Condition | None:
    """Case-insensitive person name matching on a normalised column (PS3.4 C.2.2.2.1, C.2.2.2.4)."""
    return string_condition(norm_column, value, normalize=normalize_pn)


def text_condition(norm_column: Column, value: str | None) -> Condition | None:
    """Case-insensitive matching of free text (e.g. StudyDescription) on a normalised column."""
    return string_condition(norm_column, value, normalize=normalize_text)


def _parse_date(text: str, what: str) -> dt.date:
    """Parse one DA value ``YYYYMMDD`` or raise a ValueError naming the attribute."""
    if not _DATE_RE.fullmatch(text):
        raise ValueError(f"{what}: {text!r} is not a date in the form YYYYMMDD")
    try:
        return dt.date(int(text[:4]), int(text[4:6]), int(text[6:]))
    except ValueError:
        raise ValueError(f"{what}: {text!r} is not a valid calendar date") from None


def parse_date_range(
    value: str | None, *, what: str = "date"
) -> tuple[dt.date | None, dt.date | None] | None:
    """Parse a DA matching value into (first, last) dates, None meaning open (PS3.4 C.2.2.2.5).

    Accepts ``YYYYMMDD``, ``A-B``, ``-B`` and ``A-``; returns None for universal matching.
    """
    if is_universal(value):
        return None
    assert value is not None
    text = value.strip(" ")
    if text.count("-") > 1 or text == "-":
        raise ValueError(f"{what}: {text!r} is not a date or a date range (YYYYMMDD-YYYYMMDD)")
    if "-" not in text:
        day = _parse_date(text, what)
        return day, day
    start_text, end_text = text.split("-")
    start = _parse_date(start_text, what) if start_text else None
    end = _parse_date(end_text, what) if end_text else None
    if start is not None and end is not None and start > end:
        raise ValueError(f"{what}: the range {text!r} ends before it starts")
    return start, end


def date_condition(column: Column, value: str | None, *, what: str = "date") -> Condition | None:
    """Match a DICOM date or date range (PS3.4 C.2.2.2.5) against a DATE column."""
    bounds = parse_date_range(value, what=what)
    if bounds is None:
        return None
    start, end = bounds
    if start is not None and start == end:
        return column == start
    if start is None:
        return column <= end
    if end is None:
        return column >= start
    return and_(column >= start, column <= end)


def _split_list(value: str) -> list[str]:
    """Split a list of values on commas (PS3.18 8.3.4.1) or backslashes (PS3.5 6.4)."""
    return [part.strip(" ") for part in re.split(r"[,\\]", value)]


def uid_list_condition(column: Column, value: str | None, *, what: str = "UID") -> Condition | None:
    """List of UID matching (PS3.4 C.2.2.2.2): the column equals one of the listed UIDs.

    Raises InvalidUid when any listed value is not a UID (PS3.5 9.1); wild cards are not allowed.
    """
    if value is None or value.strip(" ") == "":
        return None
    uids = [validate_uid(part, what=what) for part in _split_list(value)]
    return column == uids[0] if len(uids) == 1 else column.in_(uids)


def multi_value_condition(column: Column, value: str | None, *, what: str) -> Condition | None:
    """Match code strings against a column holding ``\\A\\B\\`` (PS3.4 C.2.2.2.1, multiple values).

    A study matches when any listed code is among its values, e.g. ModalitiesInStudy
    (PS3.4 C.6.1.1.3.1). Only whole codes match; wild cards other than a lone ``*`` are refused.
    """
    if is_universal(value):
        return None
    assert value is not None
    codes = [code.upper() for code in _split_list(value)]
    for code in codes:
        if not _CS_RE.fullmatch(code):
            raise ValueError(f"{what}: {code!r} is not a code string (A-Z, 0-9, _, at most 16)")
    conditions = [column.like(f"%\\{like_pattern(c)}\\%", escape=LIKE_ESCAPE) for c in codes]
    return conditions[0] if len(conditions) == 1 else or_(*conditions)
