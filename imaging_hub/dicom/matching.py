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

from sqlalchemy import ColumnElement, and_, func, literal, or_
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import InstrumentedAttribute
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement
from sqlalchemy.types import NullType

from imaging_hub.dicom.keys import normalize_pn, normalize_text, normalize_time
from imaging_hub.dicom.uids import validate_uid

__all__ = [
    "LIKE_ESCAPE",
    "date_condition",
    "fuzzy_pn_condition",
    "glob_pattern",
    "has_wildcards",
    "int_condition",
    "is_universal",
    "like_pattern",
    "multi_value_condition",
    "parse_date_range",
    "pn_condition",
    "sort_key_date_condition",
    "string_condition",
    "text_condition",
    "time_condition",
    "uid_list_condition",
    "wildcard_condition",
]

#: Escape character of every LIKE pattern built here (never a character DICOM gives meaning to).
LIKE_ESCAPE = "!"

Column = InstrumentedAttribute[Any] | ColumnElement[Any]
Condition = ColumnElement[bool]

_DATE_RE = re.compile(r"\d{8}")
_CS_RE = re.compile(r"[A-Z0-9_ ]{1,16}")
_TM_RE = re.compile(r"(\d{2})(\d{2})?(\d{2})?(\.\d{1,6})?")
_WORD_SPLIT_RE = re.compile(r"[\s^,=]+")


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


def glob_pattern(value: str) -> str:
    """Translate a DICOM wild card value into an SQLite GLOB pattern (``[`` made literal)."""
    return value.replace("[", "[[]")


def _successor(prefix: str) -> str | None:
    """The smallest string greater than every string starting with prefix (binary order)."""
    code = ord(prefix[-1]) + 1
    if code > 0x10FFFF or 0xD800 <= code <= 0xDFFF:
        return None
    return prefix[:-1] + chr(code)


class _Wildcard(FunctionElement[bool]):
    """``column`` matches a DICOM wild card value: LIKE in general, GLOB on SQLite.

    SQLite's LIKE ignores ASCII case and cannot use a binary index; GLOB is case-sensitive like
    PostgreSQL's LIKE and can.
    """

    type = NullType()  # type: ignore[assignment]  # a condition: no "= 1" without booleans
    inherit_cache = True
    name = "dicom_wildcard"


class _PrefixWildcard(FunctionElement[bool]):
    """A ``_Wildcard`` whose value starts with literal text: on SQLite also a range of the index."""

    type = NullType()  # type: ignore[assignment]  # a condition: no "= 1" without booleans
    inherit_cache = True
    name = "dicom_prefix_wildcard"


@compiles(_Wildcard)
@compiles(_PrefixWildcard)
def _compile_like(element: FunctionElement[bool], compiler: SQLCompiler, **kw: Any) -> str:
    column, like, *_ = (compiler.process(c, **kw) for c in element.clauses)
    return f"{column} LIKE {like} ESCAPE '{LIKE_ESCAPE}'"


@compiles(_Wildcard, "sqlite")
def _compile_glob(element: FunctionElement[bool], compiler: SQLCompiler, **kw: Any) -> str:
    column, _, glob = (compiler.process(c, **kw) for c in element.clauses)
    return f"{column} GLOB {glob}"


@compiles(_PrefixWildcard, "sqlite")
def _compile_prefix_glob(element: FunctionElement[bool], compiler: SQLCompiler, **kw: Any) -> str:
    column, _, glob, low, high = (compiler.process(c, **kw) for c in element.clauses)
    return f"({column} >= {low} AND {column} < {high} AND {column} GLOB {glob})"


def wildcard_condition(column: Column, value: str) -> Condition:
    """Wild card matching (PS3.4 C.2.2.2.4) of value, ``*`` and ``?``, case-sensitive."""
    prefix = re.split(r"[*?]", value, maxsplit=1)[0]
    high = _successor(prefix) if prefix else None
    if high is not None:
        return _PrefixWildcard(column, like_pattern(value), glob_pattern(value), prefix, high)
    return _Wildcard(column, like_pattern(value), glob_pattern(value))


def string_condition(
    column: Column,
    value: str | None,
    *,
    normalize: Callable[[str], str | None] | None = None,
    indexed: bool = False,
) -> Condition | None:
    """Single value or wild card matching of a string attribute (PS3.4 C.2.2.2.1, C.2.2.2.4).

    ``normalize`` maps the query value to the form the column stores (e.g. upper case for the
    ``*_norm`` columns); ``*`` and ``?`` pass through it unchanged. ``indexed`` matches wild
    cards with ``wildcard_condition`` (case-sensitive everywhere, index ranges on SQLite)
    instead of a plain LIKE.
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
        if indexed:
            return wildcard_condition(column, text)
        return column.like(like_pattern(text), escape=LIKE_ESCAPE)
    return column == text


def pn_condition(
    norm_column: Column, value: str | None, *, indexed: bool = False
) -> Condition | None:
    """Case-insensitive person name matching on a normalised column (PS3.4 C.2.2.2.1, C.2.2.2.4)."""
    return string_condition(norm_column, value, normalize=normalize_pn, indexed=indexed)


def fuzzy_pn_condition(norm_column: Column, value: str | None) -> Condition | None:
    """Fuzzy person name matching (PS3.18 8.3.4.2 ``fuzzymatching``) on a normalised column.

    Every word of the value (split on spaces, ``^``, ``,`` and ``=``) must begin some word of
    the name, in any component and any order, ignoring case and accents: ``jane doe`` and
    ``Doe^J*`` both match ``Doe^Jane``. ``*`` and ``?`` keep their wild card meaning.
    """
    if is_universal(value):
        return None
    assert value is not None
    words = [normalize_text(w) for w in _WORD_SPLIT_RE.split(value)]
    words_of_name = literal(" ").concat(func.replace(norm_column, "^", " "))
    conditions = [
        words_of_name.like(f"% {like_pattern(w)}%", escape=LIKE_ESCAPE)
        for w in words
        if w and w != "*"
    ]
    if not conditions:
        return None
    return conditions[0] if len(conditions) == 1 else and_(*conditions)


def text_condition(
    norm_column: Column, value: str | None, *, indexed: bool = False
) -> Condition | None:
    """Case-insensitive matching of free text (e.g. StudyDescription) on a normalised column."""
    return string_condition(norm_column, value, normalize=normalize_text, indexed=indexed)


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


def sort_key_date_condition(
    column: Column, value: str | None, *, what: str = "date"
) -> Condition | None:
    """Match a DA value or range (PS3.4 C.2.2.2.5) against a ``YYYYMMDD…`` sort key column.

    The key holds the date followed by a time, or '' when there is no date (never matched).
    """
    bounds = parse_date_range(value, what=what)
    if bounds is None:
        return None
    start, end = bounds
    conditions = [column >= f"{start:%Y%m%d}" if start is not None else column > ""]
    if end is not None and end < dt.date.max:
        conditions.append(column < f"{end + dt.timedelta(days=1):%Y%m%d}")
    return and_(*conditions)


def _end_of(text: str) -> str:
    """The last instant a partial TM value stands for, normalised (``12`` -> ``125959.999999``)."""
    found = _TM_RE.fullmatch(text.replace(":", ""))
    assert found is not None  # checked by normalize_time first
    hh, mm, ss, frac = found.groups()
    return f"{hh}{mm or '59'}{ss or '59'}{frac or '.999999'}"


def _valid_time(normal: str) -> bool:
    """Tell whether a normalised HHMMSS[.ffffff] names a time of day (a leap second allowed)."""
    return int(normal[:2]) < 24 and int(normal[2:4]) < 60 and int(normal[4:6]) <= 60


def time_condition(column: Column, value: str | None, *, what: str = "time") -> Condition | None:
    """Match a TM value or range (PS3.4 C.2.2.2.5) against a column normalised by normalize_time.

    A single value matches exactly; a range's open or partial end covers the whole partial
    value (``-12`` ends at 12:59:59.999999).
    """
    if is_universal(value):
        return None
    assert value is not None
    text = value.strip(" ")
    parts = text.split("-")
    if len(parts) > 2 or text == "-":
        raise ValueError(f"{what}: {text!r} is not a time or a time range (HHMMSS-HHMMSS)")
    normal = [normalize_time(p) if p else None for p in parts]
    for raw, done in zip(parts, normal, strict=True):
        if raw and (done is None or not _valid_time(done)):
            raise ValueError(f"{what}: {raw!r} is not a time in the form HHMMSS")
    if len(parts) == 1:
        exact: Condition = column == normal[0]
        return exact
    start, end = normal
    if start is not None and end is not None and start > _end_of(parts[1]):
        raise ValueError(f"{what}: the range {text!r} ends before it starts")
    conditions: list[Condition] = []
    if start is not None:
        conditions.append(column >= start)
    if end is not None:
        conditions.append(column <= _end_of(parts[1]))
    return and_(*conditions)


def int_condition(column: Column, value: str | None, *, what: str = "value") -> Condition | None:
    """Single value matching of an IS attribute held in an integer column (PS3.4 C.2.2.2.1)."""
    if is_universal(value):
        return None
    assert value is not None
    text = value.strip(" ")
    if not re.fullmatch(r"[+-]?\d{1,10}", text) or abs(int(text)) > 2**31 - 1:
        raise ValueError(f"{what}: {text!r} is not an integer")
    condition: Condition = column == int(text)
    return condition


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
