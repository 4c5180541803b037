"""DICOMweb: search and frame columns

A study sort key (StudyDate + StudyTime as one string, indexed with the primary key and the
instance count) lets study searches walk one index in result order, page through it without
reading study rows, and a StudyDate range become a range of that index;
series keep PerformedProcedureStepStartDate/Time for series-level matching. Existing rows are
filled from the columns and header JSON the index already holds.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02

"""

import datetime as dt
import json
import re
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_PPS_DATE = "00400244"
_PPS_TIME = "00400245"
_TM_RE = re.compile(r"(\d{2})(\d{2})?(\d{2})?(\.\d{1,6})?")


def _first_value(dicom_json: Any, tag: str) -> str | None:
    """The first value of an attribute in stored DICOM JSON, as text."""
    if isinstance(dicom_json, str):
        dicom_json = json.loads(dicom_json)
    element = (dicom_json or {}).get(tag) or {}
    values = element.get("Value") or [None]
    return str(values[0]) if values[0] is not None else None


def _date(text: str | None) -> dt.date | None:
    """A DA value as a date (None when absent or invalid)."""
    text = (text or "").strip().replace(".", "")
    if not re.fullmatch(r"\d{8}", text):
        return None
    try:
        return dt.date(int(text[:4]), int(text[4:6]), int(text[6:]))
    except ValueError:
        return None


def _time(text: str | None) -> str | None:
    """A TM value normalised to HHMMSS[.ffffff] (None when absent or invalid)."""
    found = _TM_RE.fullmatch((text or "").strip().replace(":", ""))
    if not found:
        return None
    hh, mm, ss, frac = found.groups()
    return f"{hh}{mm or '00'}{ss or '00'}{frac or ''}"


def _backfill() -> None:
    """Fill the new columns of rows indexed before this revision."""
    conn = op.get_bind()
    study = sa.table(
        "study",
        sa.column("id", sa.Integer),
        sa.column("study_date", sa.Date),
        sa.column("study_time", sa.String),
        sa.column("sort_key", sa.String),
    )
    for row in conn.execute(sa.select(study.c.id, study.c.study_date, study.c.study_time)):
        if row.study_date is not None:
            key = row.study_date.strftime("%Y%m%d") + (row.study_time or "")
            conn.execute(study.update().where(study.c.id == row.id).values(sort_key=key))
    series = sa.table(
        "series",
        sa.column("id", sa.Integer),
        sa.column("dicom_json", sa.JSON),
        sa.column("performed_date", sa.Date),
        sa.column("performed_time", sa.String),
    )
    for srow in conn.execute(sa.select(series.c.id, series.c.dicom_json)):
        day = _date(_first_value(srow.dicom_json, _PPS_DATE))
        time = _time(_first_value(srow.dicom_json, _PPS_TIME))
        if day is not None or time is not None:
            conn.execute(
                series.update()
                .where(series.c.id == srow.id)
                .values(performed_date=day, performed_time=time)
            )


def upgrade() -> None:
    """Upgrade schema."""
    with op.batch_alter_table("study", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("sort_key", sa.String(length=32), nullable=False, server_default="")
        )
        batch_op.create_index(
            "ix_study_sort_key_id", ["sort_key", "id", "num_instances"], unique=False
        )
        batch_op.create_index(
            "ix_study_identity_sort",
            ["source_identity_id", "sort_key", "id", "num_instances"],
            unique=False,
        )
    with op.batch_alter_table("series", schema=None) as batch_op:
        batch_op.add_column(sa.Column("performed_date", sa.Date(), nullable=True))
        batch_op.add_column(sa.Column("performed_time", sa.String(length=16), nullable=True))
        batch_op.create_index(
            batch_op.f("ix_series_performed_date"), ["performed_date"], unique=False
        )
    _backfill()


def downgrade() -> None:
    """Downgrade schema (plain DROP COLUMN: SQLite 3.35+ has it, and a batch table copy would
    trip the foreign keys that point at these tables)."""
    op.drop_index("ix_series_performed_date", table_name="series")
    op.drop_column("series", "performed_time")
    op.drop_column("series", "performed_date")
    op.drop_index("ix_study_identity_sort", table_name="study")
    op.drop_index("ix_study_sort_key_id", table_name="study")
    op.drop_column("study", "sort_key")
