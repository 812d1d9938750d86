"""Model governance and evaluation: per-model policies, alias-move requests, model cards,
evaluation records and release-gate verdicts.

``model_policies`` holds one policy per registered model (which aliases are protected, who may
approve, the checks a version must pass, whether a card is required), as JSON lists.
``alias_requests`` are the moves of protected aliases waiting for (or given) a decision; the
decision's check results are kept with it. ``model_cards`` holds one Markdown card per version,
generated or edited. ``model_evaluations`` records metrics of a version on a dataset version;
``gate_verdicts`` the verdicts of ``keel models gate``. Every change to these also goes to the
append-only ``model_audit`` trail (0010), in the same transaction.

Revision ID: 0011
Revises: 0010
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

BIGINT = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _model_fk() -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["model_id"], ["registered_models.model_id"], ondelete="CASCADE"
    )


def _version_fk() -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["model_id", "version"],
        ["model_versions.model_id", "model_versions.version"],
        ondelete="CASCADE",
    )


def upgrade() -> None:
    op.create_table(
        "model_policies",
        sa.Column("model_id", sa.Integer(), nullable=False),
        sa.Column("protect", sa.Text(), nullable=False),  # JSON list of aliases
        sa.Column("approvers", sa.Text(), nullable=False),  # JSON list: user names or @role
        sa.Column("requires", sa.Text(), nullable=False),  # JSON list of check expressions
        sa.Column("require_card", sa.Boolean(), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.Column("updated_by", sa.String(256), nullable=False),
        sa.PrimaryKeyConstraint("model_id", name="pk_model_policies"),
        _model_fk(),
    )
    op.create_table(
        "alias_requests",
        sa.Column("request_id", BIGINT, autoincrement=True, nullable=False),
        sa.Column("model_id", sa.Integer(), nullable=False),
        sa.Column("alias", sa.String(64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),  # pending approved rejected cancelled
        sa.Column("requested_by", sa.String(256), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("decided_by", sa.String(256), nullable=True),
        sa.Column("decided_at", sa.BigInteger(), nullable=True),
        sa.Column("decision_reason", sa.Text(), nullable=True),
        sa.Column("checks", sa.Text(), nullable=True),  # JSON: each check and its result
        sa.PrimaryKeyConstraint("request_id", name="pk_alias_requests"),
        _version_fk(),
    )
    op.create_index("ix_alias_requests_model_state", "alias_requests", ["model_id", "state"])
    op.create_table(
        "model_cards",
        sa.Column("model_id", sa.Integer(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("markdown", sa.Text(), nullable=False),
        sa.Column("generated", sa.Boolean(), nullable=False),  # False once a person edited it
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.Column("updated_by", sa.String(256), nullable=False),
        sa.PrimaryKeyConstraint("model_id", "version", name="pk_model_cards"),
        _version_fk(),
    )
    op.create_table(
        "model_evaluations",
        sa.Column("evaluation_id", BIGINT, autoincrement=True, nullable=False),
        sa.Column("model_id", sa.Integer(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("dataset", sa.String(200), nullable=False),  # NAME@VERSION
        sa.Column("dataset_digest", sa.String(64), nullable=False),
        sa.Column("target", sa.String(250), nullable=False),
        sa.Column("task", sa.String(32), nullable=False),  # regression | classification
        sa.Column("rows", sa.BigInteger(), nullable=False),
        sa.Column("metrics", sa.Text(), nullable=False),  # JSON object name -> value
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("created_by", sa.String(256), nullable=False),
        sa.PrimaryKeyConstraint("evaluation_id", name="pk_model_evaluations"),
        _version_fk(),
    )
    op.create_index(
        "ix_model_evaluations_version", "model_evaluations", ["model_id", "version", "dataset"]
    )
    op.create_table(
        "gate_verdicts",
        sa.Column("verdict_id", BIGINT, autoincrement=True, nullable=False),
        sa.Column("model_id", sa.Integer(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),  # the candidate
        sa.Column("against", sa.String(300), nullable=False),  # e.g. diabetes@champion
        sa.Column("against_version", sa.Integer(), nullable=True),  # what it resolved to
        sa.Column("metric", sa.String(250), nullable=False),
        sa.Column("passed", sa.Boolean(), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),  # JSON: values, thresholds, why
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("created_by", sa.String(256), nullable=False),
        sa.PrimaryKeyConstraint("verdict_id", name="pk_gate_verdicts"),
        _version_fk(),
    )


def downgrade() -> None:
    op.drop_table("gate_verdicts")
    op.drop_index("ix_model_evaluations_version", table_name="model_evaluations")
    op.drop_table("model_evaluations")
    op.drop_table("model_cards")
    op.drop_index("ix_alias_requests_model_state", table_name="alias_requests")
    op.drop_table("alias_requests")
    op.drop_table("model_policies")
