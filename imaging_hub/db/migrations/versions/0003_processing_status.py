"""processing status: preview state per instance, study of each job

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    with op.batch_alter_table("instance", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "preview_state", sa.String(length=16), nullable=False, server_default="pending"
            )
        )
    with op.batch_alter_table("job", schema=None) as batch_op:
        batch_op.add_column(sa.Column("study_uid", sa.String(length=64), nullable=True))
        batch_op.create_index(batch_op.f("ix_job_study_uid"), ["study_uid"], unique=False)


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table("job", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_job_study_uid"))
        batch_op.drop_column("study_uid")
    with op.batch_alter_table("instance", schema=None) as batch_op:
        batch_op.drop_column("preview_state")
