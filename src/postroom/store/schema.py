"""Every table Postroom keeps. Alembic migrations in ``migrations/`` must match this module."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
)

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)


class UtcDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes on every database (SQLite keeps no zone, so store naive UTC)."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC)


# The send ledger (design §4): one row per (idempotency key, recipient).
sends = Table(
    "sends",
    metadata,
    Column("id", String(26), primary_key=True),
    Column("idempotency_key", String(255), nullable=False),
    Column("recipient", String(320), nullable=False),
    Column("email_type", String(100), nullable=False),
    Column("priority", String(16), nullable=False),
    Column("status", String(20), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("document", LargeBinary, nullable=False),
    Column("content_hash", String(64), nullable=False),
    Column("message_id", String(255)),  # set when first rendered
    Column("provider", String(32)),
    Column("provider_message_id", String(255)),
    Column("last_error", Text),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    Column("sent_at", UtcDateTime),
    UniqueConstraint("idempotency_key", "recipient"),
    Index(None, "provider_message_id"),
    Index(None, "status", "updated_at"),
)

# Every hand-over attempt of a send, for GET /v1/emails/{id} and for audits.
send_attempts = Table(
    "send_attempts",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("send_id", String(26), ForeignKey("sends.id", ondelete="CASCADE"), nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("outcome", String(20), nullable=False),
    Column("provider", String(32)),
    Column("provider_message_id", String(255)),
    Column("error", Text),
    Column("at", UtcDateTime, nullable=False),
    Index(None, "send_id"),
)

# The SQL queue. A leased job has ``available_at`` pushed to the end of its lease, so one
# index on (queue, available_at) serves claims, lease expiry and delayed retries alike.
queue_jobs = Table(
    "queue_jobs",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("queue", String(16), nullable=False),
    Column("body", LargeBinary, nullable=False),
    Column("available_at", Float, nullable=False),
    Column("attempt", Integer, nullable=False, default=0),
    Column("deliveries", Integer, nullable=False, default=0),
    Column("receipt", String(32)),
    Column("last_error", Text),
    Column("created_at", Float, nullable=False),
    Index(None, "queue", "available_at"),
)

dead_letters = Table(
    "dead_letters",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("queue", String(16), nullable=False),
    Column("body", LargeBinary, nullable=False),
    Column("reason", Text, nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("dead_at", UtcDateTime, nullable=False),
    Index(None, "dead_at"),
)

# Addresses we must not mail: scope 'all', or 'marketing' (complaints, unsubscribes).
# Keyed by a hash of the lower-cased address (since 0004), so an erased address (GDPR) keeps
# its entry with ``email`` null and the send-time check is one primary-key lookup either way.
suppressions = Table(
    "suppressions",
    metadata,
    Column("address_hash", String(64), primary_key=True),
    Column("scope", String(16), primary_key=True),
    Column("email", String(320)),  # null once the address is erased
    Column("reason", String(64), nullable=False),
    Column("detail", Text),
    Column("created_at", UtcDateTime, nullable=False),
)

# Suppressions an operator lifted, with why (added in 0004): the audit trail of removals.
suppression_removals = Table(
    "suppression_removals",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("address_hash", String(64), nullable=False),
    Column("email", String(320)),  # null once the address is erased
    Column("scope", String(16), nullable=False),
    Column("suppressed_reason", String(64), nullable=False),
    Column("reason", Text, nullable=False),
    Column("removed_at", UtcDateTime, nullable=False),
    Index(None, "address_hash"),
)

# Normalized feedback events from ESP webhooks (filled by the feedback processor).
events = Table(
    "events",
    metadata,
    Column("id", String(26), primary_key=True),
    Column("provider", String(32), nullable=False),
    Column("event_type", String(32), nullable=False),
    Column("recipient", String(320), nullable=False),
    Column("send_id", String(26), ForeignKey("sends.id", ondelete="SET NULL")),
    Column("provider_message_id", String(255)),
    Column("dedupe_key", LargeBinary(16), nullable=False, unique=True),
    Column("occurred_at", UtcDateTime, nullable=False),
    Column("received_at", UtcDateTime, nullable=False),
    Column("payload", LargeBinary, nullable=False),
    # Added in 0002: a hash of (provider, ESP event id, recipient, type), so an event the ESP
    # sends again under its id is stored once even if its content changed; dedupe_key is the
    # content hash, for ESPs (SendGrid) that re-send the same event under a new id. Both keys
    # are the first 16 bytes of a SHA-256 since 0007 (``store/feedback_events.py``).
    Column("event_key", LargeBinary(16)),
    Index(None, "send_id"),
    Index(None, "recipient", "occurred_at"),
    Index(None, "event_key", unique=True),
)

# Feedback state per send (added in 0002): the strongest outcome heard so far, so a late
# ``delivered`` never undoes a ``bounced_hard``. ``recipient``/``send_created_at`` copy the
# send's, to count an address's latest outcomes (the soft-bounce rule) from this table alone.
send_feedback = Table(
    "send_feedback",
    metadata,
    Column("send_id", String(26), ForeignKey("sends.id", ondelete="CASCADE"), primary_key=True),
    Column("recipient", String(320), nullable=False),
    Column("send_created_at", UtcDateTime, nullable=False),
    Column("state", String(20), nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    Index(None, "recipient", "send_created_at"),
)

# One-use webhook tokens (Mailgun's), remembered until they expire (added in 0002).
webhook_tokens = Table(
    "webhook_tokens",
    metadata,
    Column("key", String(255), primary_key=True),
    Column("expires_at", UtcDateTime, nullable=False),
    Index(None, "expires_at"),
)

# Per-day counters (added in 0003): how much of a daily cap is spent, e.g. a warm-up's
# ``warmup:<provider>``. Taken inside the transaction that marks the sends ``sending``.
send_counts = Table(
    "send_counts",
    metadata,
    Column("day", String(10), primary_key=True),  # UTC date, YYYY-MM-DD
    Column("counter", String(100), primary_key=True),
    Column("count", Integer, nullable=False),
)

# The audience (added in 0004): one subscriber per lower-cased address, creators' lists, and
# subscriptions between them. An erased subscriber keeps only its id and status ``erased``.
subscribers = Table(
    "subscribers",
    metadata,
    Column("id", String(26), primary_key=True),
    Column("email", String(320), unique=True),  # lower-cased; null once erased
    Column("name", String(200)),
    Column("status", String(16), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
)

lists = Table(
    "lists",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("creator", String(200), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
)

# ``consent``/``consent_expires_at`` copy the subscription's current consent record, so a
# campaign filters expired implied consent without a join. (list_id, status, subscriber_id)
# lets a campaign page through a list's active subscribers by keyset: ``WHERE list_id = ? AND
# status = 'active' AND subscriber_id > ? ORDER BY subscriber_id LIMIT 1000``.
subscriptions = Table(
    "subscriptions",
    metadata,
    Column("list_id", String(64), ForeignKey("lists.id", ondelete="CASCADE"), primary_key=True),
    Column(
        "subscriber_id",
        String(26),
        ForeignKey("subscribers.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("status", String(16), nullable=False),
    Column("consent", String(16), nullable=False),
    Column("consent_expires_at", UtcDateTime),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    Column("confirmed_at", UtcDateTime),
    Column("unsubscribed_at", UtcDateTime),
    Index(None, "list_id", "status", "subscriber_id"),
    Index(None, "subscriber_id"),
)

# Every consent given (CASL, GDPR Art. 7: who, when, how, from where). Unique on what was
# given, so importing the same file again records nothing new.
consent_records = Table(
    "consent_records",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column(
        "subscriber_id",
        String(26),
        ForeignKey("subscribers.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("list_id", String(64), ForeignKey("lists.id", ondelete="CASCADE"), nullable=False),
    Column("kind", String(16), nullable=False),  # express | implied
    Column("source", String(200), nullable=False),
    Column("ip", String(64)),
    Column("consented_at", UtcDateTime, nullable=False),
    Column("expires_at", UtcDateTime),
    Column("recorded_at", UtcDateTime, nullable=False),
    UniqueConstraint("subscriber_id", "list_id", "kind", "source", "consented_at"),
)

# Campaigns (added in 0005): a mailing to a list's audience, fanned out as chunk jobs.
# ``document`` holds what the creator sent (template data, metadata, A/B and spread settings)
# as JSON. The feedback counters are kept by the feedback processor as events bind to the
# campaign's recipients, so alerts and A/B decisions read one row, not a million.
campaigns = Table(
    "campaigns",
    metadata,
    Column("id", String(26), primary_key=True),
    Column("list_id", String(64), ForeignKey("lists.id"), nullable=False),
    Column("email_type", String(100), nullable=False),
    Column("document", LargeBinary, nullable=False),
    Column("status", String(16), nullable=False),
    Column("ab_state", String(16)),  # testing | waiting | decided; null without an A/B test
    Column("ab_winner", Integer),
    Column("status_reason", Text),  # why it was paused or cancelled, who decided the winner
    Column("send_at", UtcDateTime, nullable=False),
    Column("total", Integer, nullable=False, default=0),
    Column("chunks", Integer, nullable=False, default=0),
    Column("delivered", Integer, nullable=False, default=0),
    Column("bounced_hard", Integer, nullable=False, default=0),
    Column("bounced_soft", Integer, nullable=False, default=0),
    Column("complained", Integer, nullable=False, default=0),
    Column("unsubscribed", Integer, nullable=False, default=0),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    Column("started_at", UtcDateTime),
    Column("snapshot_at", UtcDateTime),
    Column("finished_at", UtcDateTime),
    Index(None, "status", "send_at"),
    Index(None, "created_at"),
)

# One chunk job of a campaign: up to 1,000 consecutive snapshot positions. Its counters move
# in the transaction that records its recipients' outcomes, so a campaign's status is a sum
# over its chunks. ``not_before`` spreads a campaign over a delivery window.
campaign_chunks = Table(
    "campaign_chunks",
    metadata,
    Column(
        "campaign_id", String(26), ForeignKey("campaigns.id", ondelete="CASCADE"), primary_key=True
    ),
    Column("chunk", Integer, primary_key=True),
    Column("first_position", Integer, nullable=False),
    Column("size", Integer, nullable=False),
    Column("state", String(12), nullable=False),  # held | queued | done
    Column("not_before", UtcDateTime),
    Column("sent", Integer, nullable=False, default=0),
    Column("failed", Integer, nullable=False, default=0),
    Column("suppressed", Integer, nullable=False, default=0),
    Column("ambiguous", Integer, nullable=False, default=0),
    Column("updated_at", UtcDateTime, nullable=False),
    # Hand-overs so far; ``sending_since`` (epoch seconds, kept fresh by heartbeats) marks one
    # in progress: its chunk's ``pending`` recipients are with the ESP (added in 0006).
    Column("handovers", Integer, nullable=False, default=0, server_default="0"),
    Column("sending_since", Float),
)

# The campaign's per-recipient ledger (design §4 for newsletters): the audience snapshot, one
# row per position, and what became of each. The send id of a recipient is
# ``<campaign id>.<position>`` (Message-ID, ESP custom args), which binds webhooks back.
# ``feedback`` is the strongest outcome heard (as ``send_feedback.state``); ``opened_at`` and
# ``clicked_at`` record the first human open and click, for A/B decisions.
# No foreign key to ``campaigns`` (dropped in 0006): its check cost a trigger per snapshot row.
campaign_recipients = Table(
    "campaign_recipients",
    metadata,
    Column("campaign_id", String(26), primary_key=True),
    Column("position", Integer, primary_key=True),
    Column("subscriber_id", String(26), nullable=False),
    Column("email", String(320)),  # null once the address is erased
    Column("name", String(200)),
    Column("variant", Integer),
    Column("status", String(12), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("provider_message_id", String(255)),
    Column("error", Text),
    Column("updated_at", Float),  # epoch seconds
    Column("feedback", String(20)),
    Column("opened_at", UtcDateTime),
    Column("clicked_at", UtcDateTime),
)

# Alerts (added in 0005): one row per time a rule fired for a subject (a provider, a campaign,
# a queue class); ``resolved_at`` is set when the condition clears.
alerts = Table(
    "alerts",
    metadata,
    Column("id", String(26), primary_key=True),
    Column("rule", String(64), nullable=False),
    Column("severity", String(16), nullable=False),  # warning | critical
    Column("subject", String(200), nullable=False),
    Column("message", Text, nullable=False),
    Column("value", Float),
    Column("threshold", Float),
    Column("fired_at", UtcDateTime, nullable=False),
    Column("resolved_at", UtcDateTime),
    Column("notified_at", UtcDateTime),
    Index(None, "rule", "subject", "resolved_at"),
    Index(None, "fired_at"),
)
