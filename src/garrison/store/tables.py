"""The database schema. Alembic migrations under ``migrations/`` create exactly this."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect


class UtcDateTime(TypeDecorator[dt.datetime]):
    """Timezone-aware UTC timestamps on every backend (SQLite stores them naive)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UtcDateTime column")
        utc = value.astimezone(dt.UTC)
        return utc.replace(tzinfo=None) if dialect.name == "sqlite" else utc

    def process_result_value(self, value: Any, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        assert isinstance(value, dt.datetime)
        return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


metadata = MetaData()

principals = Table(
    "principals",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(64), nullable=False, unique=True),
    Column("role", String(32), nullable=False),
    Column("token_digest", String(64), nullable=False, unique=True),
    Column("created_at", UtcDateTime, nullable=False),
    Column("disabled", Boolean, nullable=False, default=False),
)

batches = Table(
    "batches",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(128), nullable=False),
    Column("manufacturer_id", Integer, ForeignKey("principals.id"), nullable=True),
    Column("model", String(64), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("expires_at", UtcDateTime, nullable=False),
    Column("quota", Integer, nullable=True),
    Column("issued", Integer, nullable=False, default=0),
    Column("closed", Boolean, nullable=False, default=False),
    Column("idevid_issuer", String(64), nullable=True, index=True),
    Column("idevid_ca", LargeBinary, nullable=True),
)

authorizations = Table(
    "authorizations",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("batch_id", Integer, ForeignKey("batches.id"), nullable=False, index=True),
    Column("serial", String(64), nullable=True, unique=True),
    Column("token_digest", String(64), nullable=False, unique=True),
    Column("used_at", UtcDateTime, nullable=True),
)

devices = Table(
    "devices",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("serial", String(64), nullable=False, unique=True),
    Column("batch_id", Integer, ForeignKey("batches.id"), nullable=True),
    Column("model", String(64), nullable=False),
    Column("status", String(16), nullable=False),
    Column("enrolled_at", UtcDateTime, nullable=False),
    Column("last_seen_at", UtcDateTime, nullable=True),
    Column("current_cert", String(42), nullable=True),
    Column("retire_pending", Boolean, nullable=False, default=False),
    Column("update_hold", Boolean, nullable=False, default=False),
)

certificates = Table(
    "certificates",
    metadata,
    Column("serial_hex", String(42), primary_key=True),
    Column("device_id", Integer, ForeignKey("devices.id"), nullable=False, index=True),
    Column("fingerprint", String(64), nullable=False, unique=True),
    Column("not_before", UtcDateTime, nullable=False),
    Column("not_after", UtcDateTime, nullable=False),
    Column("issued_at", UtcDateTime, nullable=False),
    Column("status", String(16), nullable=False),
    Column("revoked_at", UtcDateTime, nullable=True),
    Column("revocation_reason", String(32), nullable=True),
    Column("der", LargeBinary, nullable=False),
)

crl_state = Table(
    "crl_state",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("crl_number", Integer, nullable=False),
    Column("next_update", UtcDateTime, nullable=False),
    Column("der", LargeBinary, nullable=False),
)

audit_log = Table(
    "audit_log",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=False),
    Column("at", String(40), nullable=False),
    Column("actor", String(128), nullable=False),
    Column("action", String(64), nullable=False, index=True),
    Column("target", String(256), nullable=False),
    Column("outcome", String(16), nullable=False),
    Column("details", Text, nullable=False),
    Column("prev_hash", String(64), nullable=False),
    Column("entry_hash", String(64), nullable=False),
)

audit_head = Table(
    "audit_head",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("seq", Integer, nullable=False),
    Column("entry_hash", String(64), nullable=False),
)

tuf_metadata = Table(
    "tuf_metadata",
    metadata,
    Column("role", String(32), primary_key=True),
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("data", LargeBinary, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
)

releases = Table(
    "releases",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(64), nullable=False),
    Column("version", String(64), nullable=False),
    Column("target_path", String(256), nullable=False, unique=True),
    Column("sha256", String(64), nullable=False),
    Column("length", BigInteger, nullable=False),
    Column("custom", Text, nullable=False),
    Column("state", String(16), nullable=False),
    Column("proposal", LargeBinary, nullable=False),
    Column("created_by", String(64), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("published_at", UtcDateTime, nullable=True),
)

device_commands = Table(
    "device_commands",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("device_id", Integer, ForeignKey("devices.id"), nullable=False, index=True),
    Column("action", String(16), nullable=False),
    Column("requested_by", String(128), nullable=False),
    Column("requested_at", UtcDateTime, nullable=False),
    Column("done_at", UtcDateTime, nullable=True),
    Column("outcome", String(32), nullable=True),
    Column("detail", String(300), nullable=True),
)

# -- fleet control (issue 4): inventory, groups, desired state, campaigns -------------------

device_inventory = Table(
    "device_inventory",
    metadata,
    Column("device_id", Integer, ForeignKey("devices.id"), primary_key=True, autoincrement=False),
    Column("reported_at", UtcDateTime, nullable=False),
    Column("digest", String(64), nullable=False),
    Column("firmware", String(64), nullable=True),
    Column("boot_slot", String(8), nullable=True),
    Column("slot_state", String(16), nullable=True),
    Column("apps", Text, nullable=False),
    Column("agent_version", String(32), nullable=True),
    Column("uptime_seconds", BigInteger, nullable=True),
    Column("data", Text, nullable=False),
)

device_tags = Table(
    "device_tags",
    metadata,
    Column("device_id", Integer, ForeignKey("devices.id"), primary_key=True, autoincrement=False),
    Column("tag", String(64), primary_key=True),
)

device_history = Table(
    "device_history",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("device_id", Integer, ForeignKey("devices.id"), nullable=False, index=True),
    Column("at", UtcDateTime, nullable=False),
    Column("kind", String(32), nullable=False),
    Column("summary", String(300), nullable=False),
    Column("details", Text, nullable=False),
)

device_groups = Table(
    "device_groups",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(64), nullable=False, unique=True),
    Column("kind", String(16), nullable=False),
    Column("filter", Text, nullable=True),
    Column("priority", Integer, nullable=False),
    Column("window", Text, nullable=True),
    Column("created_by", String(128), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
)

group_members = Table(
    "group_members",
    metadata,
    Column(
        "group_id", Integer, ForeignKey("device_groups.id"), primary_key=True, autoincrement=False
    ),
    Column("device_id", Integer, ForeignKey("devices.id"), primary_key=True, index=True),
)

desired_state = Table(
    "desired_state",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("scope", String(8), nullable=False),
    Column("scope_id", Integer, nullable=False),
    Column("firmware_release_id", Integer, ForeignKey("releases.id"), nullable=True),
    Column("apps", Text, nullable=True),
    Column("updated_by", String(128), nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    UniqueConstraint("scope", "scope_id", name="uq_desired_state_scope"),
)

device_directives = Table(
    "device_directives",
    metadata,
    Column("device_id", Integer, ForeignKey("devices.id"), primary_key=True, autoincrement=False),
    Column("etag", String(64), nullable=False),
    Column("body", Text, nullable=False),
    Column("computed_at", UtcDateTime, nullable=False),
)

campaigns = Table(
    "campaigns",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(64), nullable=False),
    Column("group_id", Integer, ForeignKey("device_groups.id"), nullable=False, index=True),
    Column("release_id", Integer, ForeignKey("releases.id"), nullable=False),
    Column("plan", Text, nullable=False),
    Column("state", String(16), nullable=False, index=True),
    Column("phase", Integer, nullable=False),
    Column("phase_started_at", UtcDateTime, nullable=True),
    Column("reason", String(300), nullable=True),
    Column("revision", Integer, nullable=False),
    Column("created_by", String(128), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
)

campaign_devices = Table(
    "campaign_devices",
    metadata,
    Column(
        "campaign_id", Integer, ForeignKey("campaigns.id"), primary_key=True, autoincrement=False
    ),
    Column("device_id", Integer, ForeignKey("devices.id"), primary_key=True, index=True),
    Column("phase", Integer, nullable=True),
    Column("state", String(16), nullable=False),
    Column("from_version", String(64), nullable=True),
    Column("assigned_at", UtcDateTime, nullable=True),
    Column("updated_at", UtcDateTime, nullable=False),
    Column("detail", String(300), nullable=True),
)
