"""Rooms, devices, points metadata from births, node commit marks, dead letters.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision: str | None = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "sites",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("district", sa.String(64), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("bd_seq", sa.Integer),
        sa.Column("last_birth_ms", sa.BigInteger),
    )
    op.create_table(
        "devices",
        sa.Column("site", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("last_birth_ms", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "points",
        sa.Column("site", sa.String(64), primary_key=True),
        sa.Column("point", sa.String(200), primary_key=True),
        sa.Column("device", sa.String(64)),
        sa.Column("datatype", sa.String(16), nullable=False),
        sa.Column("unit", sa.String(32), nullable=False),
        sa.Column("low", sa.Float),
        sa.Column("high", sa.Float),
        sa.Column("updated_ms", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "node_marks",
        sa.Column("district", sa.String(64), primary_key=True),
        sa.Column("site", sa.String(64), primary_key=True),
        sa.Column("committed_ms", sa.BigInteger, nullable=False),
        sa.Column("updated_ms", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "dead_letters",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True
        ),
        sa.Column("received_ms", sa.BigInteger, nullable=False),
        sa.Column("topic", sa.String(512), nullable=False),
        sa.Column("reason", sa.String(32), nullable=False),
        sa.Column("detail", sa.Text, nullable=False),
        sa.Column("payload", sa.LargeBinary, nullable=False),
        sa.Column("payload_size", sa.Integer, nullable=False),
    )
    op.create_index("dead_letters_reason", "dead_letters", ["reason", "id"])


def downgrade() -> None:
    for table in ("dead_letters", "node_marks", "points", "devices", "sites"):
        op.drop_table(table)
