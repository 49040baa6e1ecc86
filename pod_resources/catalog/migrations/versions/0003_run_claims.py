"""Run claims: ``run_claims`` (claim_key, owner, claimed_at).

Who launches the run of an upload's run key (``run_key:<episode>@<generation>``) and who
resumes a dead run (``resume:<run id>``): the first insert wins, so two launchers never
both launch (see ``Catalog.claim`` and docs/operations.md).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "run_claims",
        sa.Column("claim_key", sa.String(300), primary_key=True),
        sa.Column("owner", sa.String(200), nullable=False),
        sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("run_claims")
