"""The schema of sds's first release (schema_version 1), as models.py defined it then.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create every table and index of the first schema."""
    _run_tables()
    _runtime_tables()
    _evaluation_tables()
    op.bulk_insert(sa.table("schema_version", sa.column("id", sa.Integer),
                            sa.column("version", sa.Integer),
                            sa.column("applied_at", sa.DateTime)),
                   [{"id": 1, "version": 1,
                     "applied_at": dt.datetime.now(dt.UTC).replace(tzinfo=None)}])


def _run_tables() -> None:
    """Runs, the schema marker, events and LLM calls."""
    op.create_table('runs',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('config', sa.JSON(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('seed', sa.Integer(), nullable=False),
    sa.Column('environment', sa.JSON(), nullable=True),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('updated_at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('name')
    )
    op.create_table('schema_version',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('applied_at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_table('events',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('run_id', sa.Integer(), nullable=True),
    sa.Column('kind', sa.String(length=64), nullable=False),
    sa.Column('data', sa.JSON(), nullable=True),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['run_id'], ['runs.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_events_run_kind', 'events', ['run_id', 'kind'], unique=False)
    op.create_table('llm_calls',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('run_id', sa.Integer(), nullable=True),
    sa.Column('model', sa.String(length=200), nullable=False),
    sa.Column('prompt', sa.Text(), nullable=False),
    sa.Column('response', sa.Text(), nullable=True),
    sa.Column('tokens_in', sa.Integer(), nullable=False),
    sa.Column('tokens_out', sa.Integer(), nullable=False),
    sa.Column('cost_usd', sa.Float(), nullable=False),
    sa.Column('latency_s', sa.Float(), nullable=False),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['run_id'], ['runs.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index(op.f('ix_llm_calls_run_id'), 'llm_calls', ['run_id'], unique=False)


def _runtime_tables() -> None:
    """Runtimes, programs and lineage edges."""
    op.create_table('runtimes',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('run_id', sa.Integer(), nullable=False),
    sa.Column('spec', sa.JSON(), nullable=False),
    sa.Column('spec_hash', sa.String(length=64), nullable=False),
    sa.Column('island', sa.Integer(), nullable=False),
    sa.Column('generation', sa.Integer(), nullable=False),
    sa.Column('operator', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['run_id'], ['runs.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_runtimes_run_island_gen', 'runtimes', ['run_id', 'island', 'generation'], unique=False)
    op.create_index(op.f('ix_runtimes_spec_hash'), 'runtimes', ['spec_hash'], unique=False)
    op.create_table('programs',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('slot', sa.String(length=64), nullable=False),
    sa.Column('code', sa.Text(), nullable=False),
    sa.Column('code_hash', sa.String(length=64), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=True),
    sa.Column('parent_id', sa.Integer(), nullable=True),
    sa.Column('operator', sa.String(length=64), nullable=False),
    sa.Column('diff', sa.Text(), nullable=True),
    sa.Column('llm_call_id', sa.Integer(), nullable=True),
    sa.Column('run_id', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['llm_call_id'], ['llm_calls.id'], ),
    sa.ForeignKeyConstraint(['parent_id'], ['programs.id'], ),
    sa.ForeignKeyConstraint(['run_id'], ['runs.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('code_hash')
    )
    op.create_index(op.f('ix_programs_parent_id'), 'programs', ['parent_id'], unique=False)
    op.create_index(op.f('ix_programs_run_id'), 'programs', ['run_id'], unique=False)
    op.create_index(op.f('ix_programs_slot'), 'programs', ['slot'], unique=False)
    op.create_table('runtime_parents',
    sa.Column('child_id', sa.Integer(), nullable=False),
    sa.Column('parent_id', sa.Integer(), nullable=False),
    sa.Column('role', sa.String(length=16), nullable=False),
    sa.ForeignKeyConstraint(['child_id'], ['runtimes.id'], ),
    sa.ForeignKeyConstraint(['parent_id'], ['runtimes.id'], ),
    sa.PrimaryKeyConstraint('child_id', 'parent_id', 'role')
    )
    op.create_index(op.f('ix_runtime_parents_parent_id'), 'runtime_parents', ['parent_id'], unique=False)


def _evaluation_tables() -> None:
    """Evaluations and runtimes' slot choices."""
    op.create_table('evaluations',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('run_id', sa.Integer(), nullable=True),
    sa.Column('runtime_id', sa.Integer(), nullable=True),
    sa.Column('program_id', sa.Integer(), nullable=True),
    sa.Column('stage', sa.String(length=32), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('metrics', sa.JSON(), nullable=False),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('artifacts', sa.JSON(), nullable=False),
    sa.Column('workload', sa.String(length=200), nullable=True),
    sa.Column('workload_hash', sa.String(length=64), nullable=True),
    sa.Column('device', sa.String(length=200), nullable=True),
    sa.Column('environment', sa.JSON(), nullable=True),
    sa.Column('duration_s', sa.Float(), nullable=True),
    sa.Column('attempt', sa.Integer(), nullable=False),
    sa.Column('worker', sa.String(length=200), nullable=True),
    sa.Column('lease_expires_at', sa.DateTime(), nullable=True),
    sa.Column('heartbeat_at', sa.DateTime(), nullable=True),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('started_at', sa.DateTime(), nullable=True),
    sa.Column('finished_at', sa.DateTime(), nullable=True),
    sa.ForeignKeyConstraint(['program_id'], ['programs.id'], ),
    sa.ForeignKeyConstraint(['run_id'], ['runs.id'], ),
    sa.ForeignKeyConstraint(['runtime_id'], ['runtimes.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_evaluations_program', 'evaluations', ['program_id', 'stage', 'status'], unique=False)
    op.create_index('ix_evaluations_queue', 'evaluations', ['status', 'lease_expires_at'], unique=False)
    op.create_index('ix_evaluations_run', 'evaluations', ['run_id', 'stage', 'status'], unique=False)
    op.create_index('ix_evaluations_runtime', 'evaluations', ['runtime_id', 'stage', 'status'], unique=False)
    op.create_table('runtime_slots',
    sa.Column('runtime_id', sa.Integer(), nullable=False),
    sa.Column('slot', sa.String(length=64), nullable=False),
    sa.Column('program_ref', sa.String(length=300), nullable=False),
    sa.Column('program_id', sa.Integer(), nullable=True),
    sa.Column('params', sa.JSON(), nullable=False),
    sa.ForeignKeyConstraint(['program_id'], ['programs.id'], ),
    sa.ForeignKeyConstraint(['runtime_id'], ['runtimes.id'], ),
    sa.PrimaryKeyConstraint('runtime_id', 'slot')
    )
    op.create_index(op.f('ix_runtime_slots_program_id'), 'runtime_slots', ['program_id'], unique=False)


def downgrade() -> None:
    """Drop everything (the first revision has nothing below it)."""
    op.drop_index(op.f('ix_runtime_slots_program_id'), table_name='runtime_slots')
    op.drop_table('runtime_slots')
    op.drop_index('ix_evaluations_runtime', table_name='evaluations')
    op.drop_index('ix_evaluations_run', table_name='evaluations')
    op.drop_index('ix_evaluations_queue', table_name='evaluations')
    op.drop_index('ix_evaluations_program', table_name='evaluations')
    op.drop_table('evaluations')
    op.drop_index(op.f('ix_runtime_parents_parent_id'), table_name='runtime_parents')
    op.drop_table('runtime_parents')
    op.drop_index(op.f('ix_programs_slot'), table_name='programs')
    op.drop_index(op.f('ix_programs_run_id'), table_name='programs')
    op.drop_index(op.f('ix_programs_parent_id'), table_name='programs')
    op.drop_table('programs')
    op.drop_index(op.f('ix_runtimes_spec_hash'), table_name='runtimes')
    op.drop_index('ix_runtimes_run_island_gen', table_name='runtimes')
    op.drop_table('runtimes')
    op.drop_index(op.f('ix_llm_calls_run_id'), table_name='llm_calls')
    op.drop_table('llm_calls')
    op.drop_index('ix_events_run_kind', table_name='events')
    op.drop_table('events')
    op.drop_table('schema_version')
    op.drop_table('runs')
