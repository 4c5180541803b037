"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-26

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

# revision identifiers, used by Alembic.
revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table(
        "audit_event",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(length=128), nullable=False),
        sa.Column("actor_kind", sa.String(length=16), nullable=False),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("source_address", sa.String(length=128), nullable=True),
        sa.Column(
            "patient_record_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.Column("study_uid", sa.String(length=64), nullable=True),
        sa.Column(
            "detail",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_event")),
    )
    with op.batch_alter_table("audit_event", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_audit_event_action"), ["action"], unique=False)
        batch_op.create_index(batch_op.f("ix_audit_event_actor"), ["actor"], unique=False)
        batch_op.create_index(batch_op.f("ix_audit_event_at"), ["at"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_audit_event_patient_record_id"), ["patient_record_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_audit_event_study_uid"), ["study_uid"], unique=False)

    op.create_table(
        "job",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("queue", sa.String(length=32), nullable=False),
        sa.Column(
            "payload",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("max_attempts", sa.Integer(), nullable=False),
        sa.Column("not_before", sa.DateTime(timezone=True), nullable=False),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("lease_owner", sa.String(length=128), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_job")),
    )
    with op.batch_alter_table("job", schema=None) as batch_op:
        batch_op.create_index("ix_job_state_lease_until", ["state", "lease_until"], unique=False)
        batch_op.create_index("ix_job_state_not_before", ["state", "not_before"], unique=False)

    op.create_table(
        "patient_record",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("mrn", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=324), nullable=True),
        sa.Column("name_norm", sa.String(length=324), nullable=True),
        sa.Column("birth_date", sa.Date(), nullable=True),
        sa.Column("sex", sa.String(length=16), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "merged_into_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.ForeignKeyConstraint(
            ["merged_into_id"],
            ["patient_record.id"],
            name=op.f("fk_patient_record_merged_into_id_patient_record"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_patient_record")),
        sa.UniqueConstraint("mrn", name=op.f("uq_patient_record_mrn")),
    )
    with op.batch_alter_table("patient_record", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_patient_record_birth_date"), ["birth_date"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_patient_record_name_norm"), ["name_norm"], unique=False
        )

    op.create_table(
        "stored_file",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("sop_instance_uid", sa.String(length=64), nullable=False),
        sa.Column("sop_class_uid", sa.String(length=64), nullable=False),
        sa.Column("study_uid", sa.String(length=64), nullable=False),
        sa.Column("series_uid", sa.String(length=64), nullable=False),
        sa.Column("path", sa.String(length=512), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("transfer_syntax_uid", sa.String(length=64), nullable=False),
        sa.Column("source", sa.String(length=32), nullable=False),
        sa.Column("source_detail", sa.String(length=256), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_stored_file")),
        sa.UniqueConstraint("path", name=op.f("uq_stored_file_path")),
        sa.UniqueConstraint(
            "sop_instance_uid", "sha256", name=op.f("uq_stored_file_sop_instance_uid_sha256")
        ),
    )
    with op.batch_alter_table("stored_file", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_stored_file_sop_instance_uid"), ["sop_instance_uid"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_stored_file_study_uid"), ["study_uid"], unique=False)

    op.create_table(
        "source_identity",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("patient_id", sa.String(length=64), nullable=False),
        sa.Column("issuer", sa.String(length=64), nullable=False),
        sa.Column("identity_key", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=324), nullable=True),
        sa.Column("name_norm", sa.String(length=324), nullable=True),
        sa.Column("birth_date", sa.Date(), nullable=True),
        sa.Column("sex", sa.String(length=16), nullable=True),
        sa.Column(
            "dicom_json",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column(
            "patient_record_id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            nullable=False,
        ),
        sa.Column("link_state", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["patient_record_id"],
            ["patient_record.id"],
            name=op.f("fk_source_identity_patient_record_id_patient_record"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_source_identity")),
        sa.UniqueConstraint(
            "patient_id",
            "issuer",
            "identity_key",
            name=op.f("uq_source_identity_patient_id_issuer_identity_key"),
        ),
    )
    with op.batch_alter_table("source_identity", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_source_identity_birth_date"), ["birth_date"], unique=False
        )
        batch_op.create_index(
            "ix_source_identity_name_norm",
            ["name_norm"],
            unique=False,
            postgresql_ops={"name_norm": "varchar_pattern_ops"},
        )
        batch_op.create_index(
            batch_op.f("ix_source_identity_patient_id"), ["patient_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_source_identity_patient_record_id"), ["patient_record_id"], unique=False
        )

    op.create_table(
        "identity_link_event",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column(
            "source_identity_id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            nullable=False,
        ),
        sa.Column(
            "patient_record_id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            nullable=False,
        ),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("actor", sa.String(length=128), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["patient_record_id"],
            ["patient_record.id"],
            name=op.f("fk_identity_link_event_patient_record_id_patient_record"),
        ),
        sa.ForeignKeyConstraint(
            ["source_identity_id"],
            ["source_identity.id"],
            name=op.f("fk_identity_link_event_source_identity_id_source_identity"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_identity_link_event")),
    )
    with op.batch_alter_table("identity_link_event", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_identity_link_event_patient_record_id"),
            ["patient_record_id"],
            unique=False,
        )
        batch_op.create_index(
            batch_op.f("ix_identity_link_event_source_identity_id"),
            ["source_identity_id"],
            unique=False,
        )

    op.create_table(
        "study",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("study_uid", sa.String(length=64), nullable=False),
        sa.Column(
            "source_identity_id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            nullable=False,
        ),
        sa.Column(
            "patient_record_id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            nullable=False,
        ),
        sa.Column("study_date", sa.Date(), nullable=True),
        sa.Column("study_time", sa.String(length=16), nullable=True),
        sa.Column("accession_number", sa.String(length=64), nullable=True),
        sa.Column("study_id", sa.String(length=64), nullable=True),
        sa.Column("study_description", sa.String(length=256), nullable=True),
        sa.Column("study_description_norm", sa.String(length=256), nullable=True),
        sa.Column("referring_physician_name", sa.String(length=324), nullable=True),
        sa.Column("referring_physician_norm", sa.String(length=324), nullable=True),
        sa.Column("modalities_in_study", sa.String(length=256), nullable=False),
        sa.Column("num_series", sa.Integer(), nullable=False),
        sa.Column("num_instances", sa.Integer(), nullable=False),
        sa.Column(
            "dicom_json",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["patient_record_id"],
            ["patient_record.id"],
            name=op.f("fk_study_patient_record_id_patient_record"),
        ),
        sa.ForeignKeyConstraint(
            ["source_identity_id"],
            ["source_identity.id"],
            name=op.f("fk_study_source_identity_id_source_identity"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_study")),
        sa.UniqueConstraint("study_uid", name=op.f("uq_study_study_uid")),
    )
    with op.batch_alter_table("study", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_study_accession_number"), ["accession_number"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_study_modalities_in_study"), ["modalities_in_study"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_study_patient_record_id"), ["patient_record_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_study_referring_physician_norm"),
            ["referring_physician_norm"],
            unique=False,
        )
        batch_op.create_index(
            batch_op.f("ix_study_source_identity_id"), ["source_identity_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_study_study_date"), ["study_date"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_study_study_description_norm"), ["study_description_norm"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_study_study_id"), ["study_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_study_updated_at"), ["updated_at"], unique=False)

    op.create_table(
        "series",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("series_uid", sa.String(length=64), nullable=False),
        sa.Column("study_pk", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("modality", sa.String(length=16), nullable=True),
        sa.Column("series_number", sa.Integer(), nullable=True),
        sa.Column("series_description", sa.String(length=256), nullable=True),
        sa.Column("body_part_examined", sa.String(length=64), nullable=True),
        sa.Column("num_instances", sa.Integer(), nullable=False),
        sa.Column(
            "dicom_json",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(["study_pk"], ["study.id"], name=op.f("fk_series_study_pk_study")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_series")),
        sa.UniqueConstraint("series_uid", name=op.f("uq_series_series_uid")),
    )
    with op.batch_alter_table("series", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_series_body_part_examined"), ["body_part_examined"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_series_modality"), ["modality"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_series_series_number"), ["series_number"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_series_study_pk"), ["study_pk"], unique=False)

    op.create_table(
        "instance",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("sop_instance_uid", sa.String(length=64), nullable=False),
        sa.Column(
            "series_pk", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("sop_class_uid", sa.String(length=64), nullable=False),
        sa.Column("instance_number", sa.Integer(), nullable=True),
        sa.Column("number_of_frames", sa.Integer(), nullable=True),
        sa.Column("rows", sa.Integer(), nullable=True),
        sa.Column("columns", sa.Integer(), nullable=True),
        sa.Column(
            "stored_file_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column(
            "dicom_json",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("indexed_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["series_pk"], ["series.id"], name=op.f("fk_instance_series_pk_series")
        ),
        sa.ForeignKeyConstraint(
            ["stored_file_id"],
            ["stored_file.id"],
            name=op.f("fk_instance_stored_file_id_stored_file"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_instance")),
        sa.UniqueConstraint("sop_instance_uid", name=op.f("uq_instance_sop_instance_uid")),
    )
    with op.batch_alter_table("instance", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_instance_instance_number"), ["instance_number"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_instance_series_pk"), ["series_pk"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_instance_sop_class_uid"), ["sop_class_uid"], unique=False
        )


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table("instance", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_instance_sop_class_uid"))
        batch_op.drop_index(batch_op.f("ix_instance_series_pk"))
        batch_op.drop_index(batch_op.f("ix_instance_instance_number"))

    op.drop_table("instance")
    with op.batch_alter_table("series", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_series_study_pk"))
        batch_op.drop_index(batch_op.f("ix_series_series_number"))
        batch_op.drop_index(batch_op.f("ix_series_modality"))
        batch_op.drop_index(batch_op.f("ix_series_body_part_examined"))

    op.drop_table("series")
    with op.batch_alter_table("study", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_study_updated_at"))
        batch_op.drop_index(batch_op.f("ix_study_study_id"))
        batch_op.drop_index(batch_op.f("ix_study_study_description_norm"))
        batch_op.drop_index(batch_op.f("ix_study_study_date"))
        batch_op.drop_index(batch_op.f("ix_study_source_identity_id"))
        batch_op.drop_index(batch_op.f("ix_study_referring_physician_norm"))
        batch_op.drop_index(batch_op.f("ix_study_patient_record_id"))
        batch_op.drop_index(batch_op.f("ix_study_modalities_in_study"))
        batch_op.drop_index(batch_op.f("ix_study_accession_number"))

    op.drop_table("study")
    with op.batch_alter_table("identity_link_event", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_identity_link_event_source_identity_id"))
        batch_op.drop_index(batch_op.f("ix_identity_link_event_patient_record_id"))

    op.drop_table("identity_link_event")
    with op.batch_alter_table("source_identity", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_source_identity_patient_record_id"))
        batch_op.drop_index(batch_op.f("ix_source_identity_patient_id"))
        batch_op.drop_index(
            "ix_source_identity_name_norm", postgresql_ops={"name_norm": "varchar_pattern_ops"}
        )
        batch_op.drop_index(batch_op.f("ix_source_identity_birth_date"))

    op.drop_table("source_identity")
    with op.batch_alter_table("stored_file", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_stored_file_study_uid"))
        batch_op.drop_index(batch_op.f("ix_stored_file_sop_instance_uid"))

    op.drop_table("stored_file")
    with op.batch_alter_table("patient_record", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_patient_record_name_norm"))
        batch_op.drop_index(batch_op.f("ix_patient_record_birth_date"))

    op.drop_table("patient_record")
    with op.batch_alter_table("job", schema=None) as batch_op:
        batch_op.drop_index("ix_job_state_not_before")
        batch_op.drop_index("ix_job_state_lease_until")

    op.drop_table("job")
    with op.batch_alter_table("audit_event", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_audit_event_study_uid"))
        batch_op.drop_index(batch_op.f("ix_audit_event_patient_record_id"))
        batch_op.drop_index(batch_op.f("ix_audit_event_at"))
        batch_op.drop_index(batch_op.f("ix_audit_event_actor"))
        batch_op.drop_index(batch_op.f("ix_audit_event_action"))

    op.drop_table("audit_event")
