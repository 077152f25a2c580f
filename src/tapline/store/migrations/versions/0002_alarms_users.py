"""Alarm journal (one row per transition), alarm instances (their latest state), rooms in
maintenance (their alarms out of service), users.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision: str | None = "0001"
branch_labels = None
depends_on = None

_ALARM_COLUMNS = (
    ("site", 64),
    ("district", 64),
    ("rule", 64),
    ("subject", 200),
    ("device", 64),
    ("point", 200),
    ("priority", 16),
    ("cause", 32),
)


def _context() -> list[sa.Column[str]]:
    return [sa.Column(name, sa.String(size), nullable=False) for name, size in _ALARM_COLUMNS]


def upgrade() -> None:
    op.create_table(
        "alarm_events",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True
        ),
        sa.Column("alarm_id", sa.String(64), nullable=False),
        *_context(),
        sa.Column("supply", sa.Boolean, nullable=False),
        sa.Column("event", sa.String(32), nullable=False),
        sa.Column("source", sa.String(32), nullable=False),
        sa.Column("target", sa.String(32), nullable=False),
        sa.Column("at_ms", sa.BigInteger, nullable=False),
        sa.Column("by", sa.String(64), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("active", sa.Boolean, nullable=False),
        sa.Column("value", sa.Text),
        sa.Column("message_zh", sa.Text, nullable=False),
        sa.Column("message_en", sa.Text, nullable=False),
    )
    op.create_index("alarm_events_at", "alarm_events", ["at_ms"])
    op.create_index("alarm_events_alarm", "alarm_events", ["alarm_id", "id"])
    op.create_index("alarm_events_site", "alarm_events", ["site", "at_ms"])
    op.create_table(
        "alarms",
        sa.Column("id", sa.String(64), primary_key=True),
        *_context(),
        sa.Column("phase", sa.String(32), nullable=False),
        sa.Column("active", sa.Boolean, nullable=False),
        sa.Column("raised_ms", sa.BigInteger, nullable=False),
        sa.Column("changed_ms", sa.BigInteger, nullable=False),
        sa.Column("cleared_ms", sa.BigInteger),
        sa.Column("acked_ms", sa.BigInteger),
        sa.Column("acked_by", sa.String(64)),
        sa.Column("value", sa.Text),
        sa.Column("message_zh", sa.Text, nullable=False),
        sa.Column("message_en", sa.Text, nullable=False),
    )
    op.create_index("alarms_raised", "alarms", ["raised_ms"])
    op.create_index("alarms_site", "alarms", ["site", "raised_ms"])
    op.create_table(
        "site_maintenance",
        sa.Column("site", sa.String(64), primary_key=True),
        sa.Column("since_ms", sa.BigInteger, nullable=False),
        sa.Column("by", sa.String(64), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
    )
    op.create_table(
        "users",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("salt", sa.LargeBinary, nullable=False),
        sa.Column("password_hash", sa.LargeBinary, nullable=False),
        sa.Column("display_name", sa.String(200), nullable=False),
        sa.Column("disabled", sa.Boolean, nullable=False),
        sa.Column("created_ms", sa.BigInteger, nullable=False),
        sa.Column("updated_ms", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    for table in ("users", "site_maintenance", "alarms", "alarm_events"):
        op.drop_table(table)
