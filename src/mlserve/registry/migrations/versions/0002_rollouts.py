"""Rollouts: a candidate version beside production, and their audit trail.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from mlserve.registry.models import UtcDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "rollouts",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("model_id", sa.Integer(), sa.ForeignKey("models.id"), nullable=False),
        sa.Column("active_model_id", sa.Integer(), nullable=True, unique=True),
        sa.Column("production", sa.Integer(), nullable=False),
        sa.Column("candidate", sa.Integer(), nullable=False),
        sa.Column("canary", sa.Float(), nullable=False),
        sa.Column("shadow", sa.Float(), nullable=False),
        sa.Column("sticky_header", sa.String(128), nullable=True),
        sa.Column("max_error_rate", sa.Float(), nullable=True),
        sa.Column("max_p99_ratio", sa.Float(), nullable=True),
        sa.Column("window_s", sa.Float(), nullable=False),
        sa.Column("min_requests", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("started_at", UtcDateTime(), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
    )
    op.create_index("ix_rollouts_model_id", "rollouts", ["model_id"])
    op.create_table(
        "rollout_events",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("model_id", sa.Integer(), sa.ForeignKey("models.id"), nullable=False),
        sa.Column("rollout_id", sa.Integer(), sa.ForeignKey("rollouts.id"), nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("at", UtcDateTime(), nullable=False),
    )
    op.create_index("ix_rollout_events_model_id", "rollout_events", ["model_id"])
    op.create_index("ix_rollout_events_rollout_id", "rollout_events", ["rollout_id"])


def downgrade() -> None:
    for table in ("rollout_events", "rollouts"):
        op.drop_table(table)
