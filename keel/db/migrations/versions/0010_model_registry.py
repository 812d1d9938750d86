"""The model registry: registered models, their numbered versions, tags, aliases and audit trail.

``registered_models`` holds one row per name; its ``latest_version`` is the counter a new version
takes its number from (one ``UPDATE ... RETURNING``, so two writers get 1 and 2, never the same);
``model_versions`` numbers each name's versions 1, 2, 3... (unique, as a second guard);
``model_aliases`` points an alias at a version (a foreign key to that version, so an alias never
dangles and a version an alias holds cannot be deleted). ``model_audit`` is the append-only
trail: triggers make every UPDATE and DELETE on it fail, on SQLite and PostgreSQL alike.

A version keeps its ``run_id`` as a plain column, not a foreign key: it records where the version
came from, which stays true after the run is purged.

Revision ID: 0010
Revises: 0009
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

BIGINT = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

APPEND_ONLY_MESSAGE = "model_audit is append-only: its rows cannot be updated or deleted"

SQLITE_TRIGGERS = [
    f"""CREATE TRIGGER model_audit_no_{verb.lower()} BEFORE {verb} ON model_audit
    BEGIN SELECT RAISE(ABORT, '{APPEND_ONLY_MESSAGE}'); END"""
    for verb in ("UPDATE", "DELETE")
]

POSTGRESQL_TRIGGERS = [
    f"""CREATE FUNCTION keel_model_audit_append_only() RETURNS trigger AS $$
    BEGIN RAISE EXCEPTION '{APPEND_ONLY_MESSAGE}'; END;
    $$ LANGUAGE plpgsql""",
    """CREATE TRIGGER model_audit_append_only BEFORE UPDATE OR DELETE ON model_audit
    FOR EACH ROW EXECUTE FUNCTION keel_model_audit_append_only()""",
]


def upgrade() -> None:
    op.create_table(
        "registered_models",
        sa.Column("model_id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("latest_version", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.Column("created_by", sa.String(256), nullable=False),
        sa.PrimaryKeyConstraint("model_id", name="pk_registered_models"),
        sa.UniqueConstraint("name", name="uq_registered_models_name"),
    )
    op.create_table(
        "model_versions",
        sa.Column("version_id", BIGINT, autoincrement=True, nullable=False),
        sa.Column("model_id", sa.Integer(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("run_id", sa.String(32), nullable=True),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("flavor", sa.String(64), nullable=False),
        sa.Column("signature", sa.Text(), nullable=True),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("created_by", sa.String(256), nullable=False),
        sa.PrimaryKeyConstraint("version_id", name="pk_model_versions"),
        sa.UniqueConstraint("model_id", "version", name="uq_model_versions_model_id_version"),
        sa.ForeignKeyConstraint(
            ["model_id"],
            ["registered_models.model_id"],
            name="fk_model_versions_model_id",
            ondelete="CASCADE",
        ),
    )
    op.create_index("ix_model_versions_digest", "model_versions", ["digest"])
    op.create_index("ix_model_versions_run_id", "model_versions", ["run_id"])
    op.create_table(
        "registered_model_tags",
        sa.Column("model_id", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(250), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("model_id", "key", name="pk_registered_model_tags"),
        sa.ForeignKeyConstraint(
            ["model_id"],
            ["registered_models.model_id"],
            name="fk_registered_model_tags_model_id",
            ondelete="CASCADE",
        ),
    )
    op.create_table(
        "model_version_tags",
        sa.Column("version_id", sa.BigInteger(), nullable=False),
        sa.Column("key", sa.String(250), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("version_id", "key", name="pk_model_version_tags"),
        sa.ForeignKeyConstraint(
            ["version_id"],
            ["model_versions.version_id"],
            name="fk_model_version_tags_version_id",
            ondelete="CASCADE",
        ),
    )
    op.create_table(
        "model_aliases",
        sa.Column("model_id", sa.Integer(), nullable=False),
        sa.Column("alias", sa.String(64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.Column("updated_by", sa.String(256), nullable=False),
        sa.PrimaryKeyConstraint("model_id", "alias", name="pk_model_aliases"),
        sa.ForeignKeyConstraint(
            ["model_id", "version"],
            ["model_versions.model_id", "model_versions.version"],
            name="fk_model_aliases_model_id",
        ),
    )
    op.create_table(
        "model_audit",
        sa.Column("id", BIGINT, autoincrement=True, nullable=False),
        sa.Column("model", sa.String(128), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("version", sa.Integer(), nullable=True),
        sa.Column("alias", sa.String(64), nullable=True),
        sa.Column("actor", sa.String(256), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_model_audit"),
    )
    op.create_index("ix_model_audit_model_id", "model_audit", ["model", "id"])
    triggers = (
        POSTGRESQL_TRIGGERS if op.get_bind().dialect.name == "postgresql" else SQLITE_TRIGGERS
    )
    for statement in triggers:
        op.execute(statement)


def downgrade() -> None:
    op.drop_table("model_audit")  # its triggers go with it
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS keel_model_audit_append_only()")
    op.drop_table("model_aliases")
    op.drop_table("model_version_tags")
    op.drop_table("registered_model_tags")
    op.drop_table("model_versions")
    op.drop_table("registered_models")
