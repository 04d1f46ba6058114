#!/bin/sh
# Runs once, when the PostgreSQL data volume is empty (the postgres image runs /docker-entrypoint-initdb.d/*.sh
# then; https://hub.docker.com/_/postgres "Initialization scripts"). Two roles, two purposes:
# - temporal: may create databases, so that temporal-sql-tool's `create` (deploy/temporal/setup-schema.sh) makes
#   and owns `temporal` and `temporal_visibility`, exactly as it does against an external PostgreSQL;
# - billing: owns the ledger database `billing`, which worker.py migrates itself (Alembic) at start.
# The passwords come from the environment and reach SQL as psql variables (:'name' quotes them), never pasted
# into the SQL text.
set -eu
: "${TEMPORAL_DB_PASSWORD:?}" "${LEDGER_DB_PASSWORD:?}"
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
    -v temporal_password="$TEMPORAL_DB_PASSWORD" -v ledger_password="$LEDGER_DB_PASSWORD" <<'SQL'
CREATE ROLE temporal LOGIN CREATEDB PASSWORD :'temporal_password';
CREATE ROLE billing LOGIN PASSWORD :'ledger_password';
CREATE DATABASE billing OWNER billing;
REVOKE ALL ON DATABASE billing FROM PUBLIC;
SQL
