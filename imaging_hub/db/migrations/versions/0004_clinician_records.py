"""clinician records: notes, reports, referrals, share links, API tokens; audit append-only

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

# revision identifiers, used by Alembic.
revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def _at(name: str, *, nullable: bool) -> sa.Column:  # type: ignore[type-arg]
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _fk(table: str, column: str, target: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        [column], [f"{target}.id"], name=op.f(f"fk_{table}_{column}_{target}")
    )


def _keys(table: str) -> list[sa.Constraint]:
    return [
        sa.PrimaryKeyConstraint("id", name=op.f(f"pk_{table}")),
        sa.UniqueConstraint("public_id", name=op.f(f"uq_{table}_public_id")),
    ]


def _index(table: str, *columns: str) -> None:
    op.create_index(op.f(f"ix_{table}_{'_'.join(columns)}"), table, list(columns), unique=False)


_AUDIT_GUARDS_SQLITE = [
    f"CREATE TRIGGER audit_event_no_{verb.lower()} BEFORE {verb} ON audit_event "
    "BEGIN SELECT RAISE(ABORT, 'audit events are append-only'); END"
    for verb in ("UPDATE", "DELETE")
]
_AUDIT_GUARD_PG_FUNCTION = """
CREATE FUNCTION audit_event_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit events are append-only';
END $$
"""
_AUDIT_GUARDS_PG = [
    "CREATE TRIGGER audit_event_append_only BEFORE UPDATE OR DELETE ON audit_event "
    "FOR EACH ROW EXECUTE FUNCTION audit_event_append_only()",
    "CREATE TRIGGER audit_event_no_truncate BEFORE TRUNCATE ON audit_event "
    "FOR EACH STATEMENT EXECUTE FUNCTION audit_event_append_only()",
]


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table(
        "api_token",
        sa.Column("id", _ID, nullable=False),
        sa.Column("public_id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("owner_id", _ID, nullable=False),
        sa.Column("secret_hash", sa.String(length=64), nullable=False),
        sa.Column("scopes", _JSON, nullable=False),
        sa.Column("created_by", sa.String(length=128), nullable=False),
        _at("created_at", nullable=False),
        _at("expires_at", nullable=True),
        _at("revoked_at", nullable=True),
        _at("last_used_at", nullable=True),
        _fk("api_token", "owner_id", "user_account"),
        *_keys("api_token"),
    )
    _index("api_token", "owner_id")
    op.create_table(
        "clinical_record",
        sa.Column("id", _ID, nullable=False),
        sa.Column("public_id", sa.String(length=32), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("patient_record_id", _ID, nullable=False),
        sa.Column("study_uid", sa.String(length=64), nullable=True),
        sa.Column("title", sa.String(length=256), nullable=False),
        sa.Column("content_type", sa.String(length=64), nullable=False),
        sa.Column("body", sa.Text(), nullable=True),
        sa.Column("document_key", sa.String(length=256), nullable=True),
        sa.Column("document_sha256", sa.String(length=64), nullable=True),
        sa.Column("document_size", sa.BigInteger(), nullable=True),
        sa.Column("sop_instance_uid", sa.String(length=64), nullable=True),
        sa.Column("author", sa.String(length=64), nullable=False),
        sa.Column("author_specialty", sa.String(length=32), nullable=True),
        _at("created_at", nullable=False),
        _fk("clinical_record", "patient_record_id", "patient_record"),
        *_keys("clinical_record"),
    )
    for column in ("created_at", "patient_record_id", "study_uid"):
        _index("clinical_record", column)
    op.create_table(
        "referral",
        sa.Column("id", _ID, nullable=False),
        sa.Column("public_id", sa.String(length=32), nullable=False),
        sa.Column("patient_record_id", _ID, nullable=False),
        sa.Column("from_user", sa.String(length=64), nullable=False),
        sa.Column("from_specialty", sa.String(length=32), nullable=True),
        sa.Column("to_specialty", sa.String(length=32), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("accepted_by", sa.String(length=64), nullable=True),
        _at("created_at", nullable=False),
        _at("updated_at", nullable=False),
        _fk("referral", "patient_record_id", "patient_record"),
        *_keys("referral"),
    )
    _index("referral", "patient_record_id")
    _index("referral", "to_specialty")
    op.create_table(
        "share_link",
        sa.Column("id", _ID, nullable=False),
        sa.Column("public_id", sa.String(length=32), nullable=False),
        sa.Column("secret_hash", sa.String(length=64), nullable=False),
        sa.Column("study_uid", sa.String(length=64), nullable=True),
        sa.Column("patient_record_id", _ID, nullable=True),
        sa.Column("label", sa.String(length=256), nullable=True),
        sa.Column("created_by", sa.String(length=128), nullable=False),
        _at("created_at", nullable=False),
        _at("expires_at", nullable=False),
        _at("revoked_at", nullable=True),
        _at("last_used_at", nullable=True),
        sa.Column("use_count", sa.Integer(), nullable=False),
        _fk("share_link", "patient_record_id", "patient_record"),
        *_keys("share_link"),
    )
    _index("share_link", "patient_record_id")
    _index("share_link", "study_uid")
    op.create_table(
        "referral_study",
        sa.Column("id", _ID, nullable=False),
        sa.Column("referral_id", _ID, nullable=False),
        sa.Column("study_uid", sa.String(length=64), nullable=False),
        _fk("referral_study", "referral_id", "referral"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_referral_study")),
        sa.UniqueConstraint(
            "referral_id", "study_uid", name=op.f("uq_referral_study_referral_id_study_uid")
        ),
    )
    _index("referral_study", "referral_id")
    _index("referral_study", "study_uid")
    # The audit trail is append-only: the database itself refuses to change or delete events.
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_AUDIT_GUARD_PG_FUNCTION)
        for statement in _AUDIT_GUARDS_PG:
            op.execute(statement)
    else:
        for statement in _AUDIT_GUARDS_SQLITE:
            op.execute(statement)


def downgrade() -> None:
    """Downgrade schema."""
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS audit_event_no_truncate ON audit_event")
        op.execute("DROP TRIGGER IF EXISTS audit_event_append_only ON audit_event")
        op.execute("DROP FUNCTION IF EXISTS audit_event_append_only()")
    else:
        op.execute("DROP TRIGGER IF EXISTS audit_event_no_update")
        op.execute("DROP TRIGGER IF EXISTS audit_event_no_delete")
    for table, indexes in (
        ("referral_study", ["study_uid", "referral_id"]),
        ("share_link", ["study_uid", "patient_record_id"]),
        ("referral", ["to_specialty", "patient_record_id"]),
        ("clinical_record", ["study_uid", "patient_record_id", "created_at"]),
        ("api_token", ["owner_id"]),
    ):
        for column in indexes:
            op.drop_index(op.f(f"ix_{table}_{column}"), table_name=table)
        op.drop_table(table)
