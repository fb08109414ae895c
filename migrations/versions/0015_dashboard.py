"""The dashboard's roles: ``<schema>_viewer`` (read) and ``<schema>_operator`` (its actions).

Revision ID: 0015
Revises: 0021
Create Date: 2026-12-03

Issue 13, part 1 (``pgq dashboard``). ``db/roles/014.sql`` creates both roles
(NOLOGIN, named after the schema) and grants them: the viewer SELECT on the
tables and views the pages read (the snapshots' list without their bodies),
the operator EXECUTE on the stored functions behind the pages' actions. No
table, column or function changes.

The downgrade revokes their privileges in this database and drops each role
unless another database still grants it something (roles are cluster-wide),
as revision 0003's downgrade does for the producer and worker roles.
"""

from alembic import op

from pgq.migrate import enter_schema, run_sql_file

revision = "0015"
down_revision = "0017"
branch_labels = None
depends_on = None

REVERT_ROLES = r"""
DO $roles$
DECLARE
    v_schema constant text := current_schema();
    v_role   text;
BEGIN
    FOREACH v_role IN ARRAY ARRAY[v_schema || '_viewer', v_schema || '_operator'] LOOP
        CONTINUE WHEN NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = v_role);
        EXECUTE format('REVOKE ALL ON ALL FUNCTIONS IN SCHEMA %1$I FROM %2$I;'
                       'REVOKE ALL ON ALL TABLES IN SCHEMA %1$I FROM %2$I;'
                       'REVOKE ALL ON SCHEMA %1$I FROM %2$I', v_schema, v_role);
        -- Column grants (state_snapshots) are not table grants: revoke them by name.
        EXECUTE format('REVOKE ALL (id, snapshot_type, origin, base_snapshot_id, full_snapshot_id, created_at,'
                       ' format_version, schema_revision, metadata, body_sha256) ON state_snapshots FROM %I', v_role);
        IF EXISTS (SELECT 1 FROM pg_shdepend AS d JOIN pg_roles AS r ON r.oid = d.refobjid
                   WHERE d.refclassid = 'pg_authid'::regclass AND r.rolname = v_role) THEN
            RAISE NOTICE 'pgq roles: role % is kept, other objects still refer to it', v_role;
            CONTINUE;
        END IF;
        BEGIN
            EXECUTE format('DROP ROLE %I', v_role);
        EXCEPTION WHEN insufficient_privilege OR dependent_objects_still_exist THEN
            RAISE WARNING 'pgq roles: role % was not dropped: %', v_role, SQLERRM;
        END;
    END LOOP;
END
$roles$;
"""


def upgrade() -> None:
    enter_schema()
    run_sql_file("roles/014.sql")


def downgrade() -> None:
    enter_schema()
    op.execute(REVERT_ROLES)
