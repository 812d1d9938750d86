"""The schema at the head revision, as SQLAlchemy Core tables (migrations live beside it).

Times are integer milliseconds since the epoch (as MLflow stores them). A NaN metric value is
stored as NULL with ``is_nan`` true, so SQL comparisons never match it and both SQLite (which
cannot store NaN) and PostgreSQL behave the same; infinities are stored as themselves.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

__all__ = [
    "alias_requests",
    "api_tokens",
    "artifacts",
    "audit_log",
    "dataset_versions",
    "datasets",
    "deployment_revisions",
    "deployments",
    "experiment_grants",
    "experiment_tags",
    "experiments",
    "gate_verdicts",
    "latest_metrics",
    "metadata",
    "metric_blocks",
    "metrics",
    "model_aliases",
    "model_audit",
    "model_cards",
    "model_evaluations",
    "model_policies",
    "model_version_tags",
    "model_versions",
    "params",
    "registered_model_tags",
    "registered_models",
    "run_inputs",
    "runs",
    "tags",
    "users",
    "write_batches",
]

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s",
        "pk": "pk_%(table_name)s",
    }
)

experiments = Table(
    "experiments",
    metadata,
    Column("experiment_id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(256), nullable=False, unique=True),
    Column("lifecycle_stage", String(16), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
)

experiment_tags = Table(
    "experiment_tags",
    metadata,
    Column(
        "experiment_id",
        Integer,
        ForeignKey("experiments.experiment_id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("key", String(250), primary_key=True),
    Column("value", Text, nullable=False),
)

BIGINT = BigInteger().with_variant(Integer, "sqlite")  # SQLite autoincrements INTEGER keys only

runs = Table(
    "runs",
    metadata,
    # the integer key the metric history uses (compact index entries); run_id is the public id
    Column("run_key", BIGINT, primary_key=True, autoincrement=True),
    Column("run_id", String(32), nullable=False, unique=True),
    Column(
        "experiment_id",
        Integer,
        ForeignKey("experiments.experiment_id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("run_name", String(250), nullable=False),
    Column("status", String(16), nullable=False),
    Column("user_name", String(256), nullable=False),
    Column("start_time", BigInteger, nullable=False),
    Column("end_time", BigInteger, nullable=True),
    Column("lifecycle_stage", String(16), nullable=False),
    Column("deleted_at", BigInteger, nullable=True),
    Column("parent_run_id", String(32), nullable=True),
    Column("host", String(256), nullable=False),
    # revision 0002: liveness, so a killed process's run is found and marked LOST
    Column("pid", Integer, nullable=True),
    Column("heartbeat_at", BigInteger, nullable=True),
    # revision 0007: the boot and PID namespace ``pid`` belongs to (keel.tracking.liveness)
    Column("process_space", String(64), nullable=True),
    Index(
        "ix_runs_experiment_id_lifecycle_stage_start_time",
        "experiment_id",
        "lifecycle_stage",
        "start_time",
    ),
    Index("ix_runs_status", "status"),
)

params = Table(
    "params",
    metadata,
    Column("run_id", String(32), ForeignKey("runs.run_id", ondelete="CASCADE"), primary_key=True),
    Column("key", String(250), primary_key=True),
    Column("value", Text, nullable=False),
)

tags = Table(
    "tags",
    metadata,
    Column("run_id", String(32), ForeignKey("runs.run_id", ondelete="CASCADE"), primary_key=True),
    Column("key", String(250), primary_key=True),
    Column("value", Text, nullable=False),
)

metrics = Table(
    "metrics",
    metadata,
    Column("id", BIGINT, primary_key=True, autoincrement=True),
    Column("run_key", BigInteger, ForeignKey("runs.run_key", ondelete="CASCADE"), nullable=False),
    Column("key", String(250), nullable=False),
    Column("value", Float(precision=53), nullable=True),
    Column("is_nan", Boolean, nullable=False),
    Column("step", BigInteger, nullable=False),
    Column("timestamp", BigInteger, nullable=False),
    # revision 0003: the index covers the value, so downsampling reads no table rows
    Index("ix_metrics_run_key_key_step_value", "run_key", "key", "step", "value"),
)

latest_metrics = Table(
    "latest_metrics",
    metadata,
    Column("run_id", String(32), ForeignKey("runs.run_id", ondelete="CASCADE"), primary_key=True),
    Column("key", String(250), primary_key=True),
    Column("value", Float(precision=53), nullable=True),
    Column("is_nan", Boolean, nullable=False),
    Column("step", BigInteger, nullable=False),
    Column("timestamp", BigInteger, nullable=False),
    # revision 0002: search by (key, value) without touching the runs table first
    Index("ix_latest_metrics_key_value", "key", "value", "run_id"),
)

# revision 0008: a summary per block of 128 steps, so a long series downsamples fast
metric_blocks = Table(
    "metric_blocks",
    metadata,
    Column(
        "run_key",
        BigInteger,
        ForeignKey("runs.run_key", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("key", String(250), primary_key=True),
    Column("block", BigInteger, primary_key=True),  # floor(step / 128)
    Column("count", BigInteger, nullable=False),
    Column("min_value", Float(precision=53), nullable=True),  # NULL: only NaN points
    Column("max_value", Float(precision=53), nullable=True),
    Column("first_step", BigInteger, nullable=False),
    Column("last_step", BigInteger, nullable=False),
    Column("last_timestamp", BigInteger, nullable=False),
    Column("last_value", Float(precision=53), nullable=True),  # NULL: NaN
)

artifacts = Table(
    "artifacts",
    metadata,
    Column("run_id", String(32), ForeignKey("runs.run_id", ondelete="CASCADE"), primary_key=True),
    Column("path", String(1024), primary_key=True),
    Column("digest", String(64), nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("kind", String(8), nullable=False),
    Column("created_at", BigInteger, nullable=False),
)

# revision 0004: metric batches already applied, so a retried batch is stored once
write_batches = Table(
    "write_batches",
    metadata,
    Column("batch_id", String(36), primary_key=True),
    # revision 0006: pruning ids past the retention window scans a range of this index
    Column("created_at", BigInteger, nullable=False, index=True),
)


# revision 0005: authentication and authorization (keel server --auth)
users = Table(
    "users",
    metadata,
    Column("user_id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(64), nullable=False, unique=True),
    Column("disabled", Boolean, nullable=False),
    Column("created_at", BigInteger, nullable=False),
)

api_tokens = Table(
    "api_tokens",
    metadata,
    Column("token_id", String(16), primary_key=True),
    Column(
        "user_id",
        Integer,
        ForeignKey("users.user_id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    Column("role", String(8), nullable=False),
    Column("label", String(128), nullable=False),
    Column("salt", String(32), nullable=False),
    Column("digest", String(64), nullable=False),  # sha256(salt + secret), hex
    Column("created_at", BigInteger, nullable=False),
    Column("expires_at", BigInteger, nullable=True),
    Column("revoked_at", BigInteger, nullable=True),
)

experiment_grants = Table(
    "experiment_grants",
    metadata,
    Column(
        "experiment_id",
        Integer,
        ForeignKey("experiments.experiment_id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column(
        "user_id",
        Integer,
        ForeignKey("users.user_id", ondelete="CASCADE"),
        primary_key=True,
        index=True,
    ),
    Column("permission", String(8), nullable=False),  # read | write | owner
    Column("granted_by", String(64), nullable=False),
    Column("granted_at", BigInteger, nullable=False),
)

audit_log = Table(
    "audit_log",
    metadata,
    Column("id", BIGINT, primary_key=True, autoincrement=True),
    Column("at", BigInteger, nullable=False, index=True),
    Column("user_name", String(64), nullable=True),
    Column("token_id", String(16), nullable=True),
    Column("method", String(8), nullable=False),
    Column("path", String(2048), nullable=False),
    Column("action", String(64), nullable=False),
    Column("status", Integer, nullable=False),
    Column("targets", Text, nullable=False),  # JSON list: ["experiment/3", "run/<id>"]
    Column("client", String(64), nullable=False),
    Index("ix_audit_log_user_name_at", "user_name", "at"),
)


# revision 0009: named dataset versions (keel.data.log_dataset) and the runs that read them
datasets = Table(
    "datasets",
    metadata,
    Column("dataset_id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(128), nullable=False, unique=True),
    Column("created_at", BigInteger, nullable=False),
)

dataset_versions = Table(
    "dataset_versions",
    metadata,
    Column("version_id", BIGINT, primary_key=True, autoincrement=True),
    Column(
        "dataset_id",
        Integer,
        ForeignKey("datasets.dataset_id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("version", Integer, nullable=False),  # 1, 2, 3... per dataset
    Column("digest", String(64), nullable=False, index=True),
    Column("kind", String(16), nullable=False),  # file | directory
    Column("format", String(16), nullable=True),  # csv | parquet | NULL
    Column("size", BigInteger, nullable=False),
    Column("files", BigInteger, nullable=False),
    Column("profile", Text, nullable=True),  # TableProfile JSON, for tables
    Column("source", Text, nullable=True),
    Column(
        "run_id",
        String(32),
        ForeignKey("runs.run_id", ondelete="SET NULL"),
        nullable=True,
        index=True,
    ),
    Column("created_at", BigInteger, nullable=False),
    UniqueConstraint("dataset_id", "version"),
)

run_inputs = Table(
    "run_inputs",
    metadata,
    Column("run_id", String(32), ForeignKey("runs.run_id", ondelete="CASCADE"), primary_key=True),
    Column(
        "version_id",
        BigInteger,
        ForeignKey("dataset_versions.version_id", ondelete="CASCADE"),
        primary_key=True,
        index=True,
    ),
    Column("context", String(64), primary_key=True),  # train | eval | ...
    Column("created_at", BigInteger, nullable=False),
)


# revision 0010: the model registry (keel.models); model_audit refuses UPDATE and DELETE through
# triggers the migration creates
registered_models = Table(
    "registered_models",
    metadata,
    Column("model_id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(128), nullable=False, unique=True),
    Column("description", Text, nullable=False),
    Column("latest_version", Integer, nullable=False),  # 0 before the first version
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
    Column("created_by", String(256), nullable=False),
)

model_versions = Table(
    "model_versions",
    metadata,
    Column("version_id", BIGINT, primary_key=True, autoincrement=True),
    Column(
        "model_id",
        Integer,
        ForeignKey("registered_models.model_id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("version", Integer, nullable=False),  # 1, 2, 3... per model
    Column("source", Text, nullable=False),  # runs:/RUN_ID/PATH
    Column("run_id", String(32), nullable=True, index=True),  # not a foreign key: history
    Column("digest", String(64), nullable=False, index=True),  # the folder's manifest
    Column("flavor", String(64), nullable=False),
    Column("signature", Text, nullable=True),  # Signature JSON
    Column("description", Text, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("created_by", String(256), nullable=False),
    UniqueConstraint("model_id", "version"),
)

registered_model_tags = Table(
    "registered_model_tags",
    metadata,
    Column(
        "model_id",
        Integer,
        ForeignKey("registered_models.model_id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("key", String(250), primary_key=True),
    Column("value", Text, nullable=False),
)

model_version_tags = Table(
    "model_version_tags",
    metadata,
    Column(
        "version_id",
        BigInteger,
        ForeignKey("model_versions.version_id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("key", String(250), primary_key=True),
    Column("value", Text, nullable=False),
)

model_aliases = Table(
    "model_aliases",
    metadata,
    Column("model_id", Integer, primary_key=True),
    Column("alias", String(64), primary_key=True),
    Column("version", Integer, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
    Column("updated_by", String(256), nullable=False),
    # an alias points at an existing version, which cannot be deleted while it does
    ForeignKeyConstraint(
        ["model_id", "version"], ["model_versions.model_id", "model_versions.version"]
    ),
)

model_audit = Table(
    "model_audit",
    metadata,
    Column("id", BIGINT, primary_key=True, autoincrement=True),
    Column("model", String(128), nullable=False),  # the name, not a key: the trail outlives it
    Column("action", String(32), nullable=False),
    Column("version", Integer, nullable=True),
    Column("alias", String(64), nullable=True),
    Column("actor", String(256), nullable=False),
    Column("reason", Text, nullable=True),
    Column("detail", Text, nullable=False),  # JSON object
    Column("at", BigInteger, nullable=False),
    Index("ix_model_audit_model_id", "model", "id"),
)

# -- model governance and evaluation (revision 0011) ---------------------------------------------


def _version_key() -> ForeignKeyConstraint:
    return ForeignKeyConstraint(
        ["model_id", "version"],
        ["model_versions.model_id", "model_versions.version"],
        ondelete="CASCADE",
    )


model_policies = Table(
    "model_policies",
    metadata,
    Column(
        "model_id",
        Integer,
        ForeignKey("registered_models.model_id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("protect", Text, nullable=False),  # JSON list of aliases
    Column("approvers", Text, nullable=False),  # JSON list: user names or @role
    Column("requires", Text, nullable=False),  # JSON list of check expressions
    Column("require_card", Boolean, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
    Column("updated_by", String(256), nullable=False),
)

alias_requests = Table(
    "alias_requests",
    metadata,
    Column("request_id", BIGINT, primary_key=True, autoincrement=True),
    Column("model_id", Integer, nullable=False),
    Column("alias", String(64), nullable=False),
    Column("version", Integer, nullable=False),
    Column("state", String(16), nullable=False),  # pending, approved, rejected, cancelled
    Column("requested_by", String(256), nullable=False),
    Column("reason", Text, nullable=True),
    Column("created_at", BigInteger, nullable=False),
    Column("decided_by", String(256), nullable=True),
    Column("decided_at", BigInteger, nullable=True),
    Column("decision_reason", Text, nullable=True),
    Column("checks", Text, nullable=True),  # JSON: each check and its result
    _version_key(),
    Index("ix_alias_requests_model_state", "model_id", "state"),
)

model_cards = Table(
    "model_cards",
    metadata,
    Column("model_id", Integer, primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("markdown", Text, nullable=False),
    Column("generated", Boolean, nullable=False),  # False once a person edited it
    Column("updated_at", BigInteger, nullable=False),
    Column("updated_by", String(256), nullable=False),
    _version_key(),
)

model_evaluations = Table(
    "model_evaluations",
    metadata,
    Column("evaluation_id", BIGINT, primary_key=True, autoincrement=True),
    Column("model_id", Integer, nullable=False),
    Column("version", Integer, nullable=False),
    Column("dataset", String(200), nullable=False),  # NAME@VERSION
    Column("dataset_digest", String(64), nullable=False),
    Column("target", String(250), nullable=False),
    Column("task", String(32), nullable=False),  # regression | classification
    Column("rows", BigInteger, nullable=False),
    Column("metrics", Text, nullable=False),  # JSON object name -> value
    Column("created_at", BigInteger, nullable=False),
    Column("created_by", String(256), nullable=False),
    _version_key(),
    Index("ix_model_evaluations_version", "model_id", "version", "dataset"),
)

gate_verdicts = Table(
    "gate_verdicts",
    metadata,
    Column("verdict_id", BIGINT, primary_key=True, autoincrement=True),
    Column("model_id", Integer, nullable=False),
    Column("version", Integer, nullable=False),  # the candidate
    Column("against", String(300), nullable=False),  # e.g. diabetes@champion
    Column("against_version", Integer, nullable=True),  # what it resolved to
    Column("metric", String(250), nullable=False),
    Column("passed", Boolean, nullable=False),
    Column("detail", Text, nullable=False),  # JSON: values, thresholds, why
    Column("created_at", BigInteger, nullable=False),
    Column("created_by", String(256), nullable=False),
    _version_key(),
)

# -- deployments (revision 0012) ------------------------------------------------------------

deployments = Table(
    "deployments",
    metadata,
    Column("deployment_id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(128), nullable=False, unique=True),
    Column("revision", Integer, nullable=False),  # the current one
    Column("created_at", BigInteger, nullable=False),
    Column("created_by", String(256), nullable=False),
    Column("updated_at", BigInteger, nullable=False),
    Column("updated_by", String(256), nullable=False),
)

deployment_revisions = Table(
    "deployment_revisions",
    metadata,
    Column(
        "deployment_id",
        Integer,
        ForeignKey("deployments.deployment_id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("revision", Integer, primary_key=True),
    Column("config", Text, nullable=False),  # JSON: primaries, shadows
    Column("resolved", Text, nullable=False),  # JSON object ref -> version
    Column("action", String(32), nullable=False),
    Column("actor", String(256), nullable=False),
    Column("note", Text, nullable=True),
    Column("created_at", BigInteger, nullable=False),
)
