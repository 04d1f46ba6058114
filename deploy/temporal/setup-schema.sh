#!/bin/sh
# Creates Temporal's two databases on PostgreSQL and brings their schemas up to the image's version: the steps
# of temporalio/samples-server compose/scripts/setup-postgres.sh (which replaced the deprecated auto-setup image,
# https://github.com/temporalio/samples-server/tree/main/compose). Safe to run on every `up` and after an image
# upgrade: `create` ignores an existing database (tools/sql and the postgresql plugin's CreateDatabase in
# temporalio/temporal), `setup-schema -v 0.0` only adds the version table, `update-schema` applies what is missing.
set -eu
: "${POSTGRES_SEEDS:?}" "${POSTGRES_USER:?}" "${SQL_PASSWORD:?}"
PORT="${DB_PORT:-5432}"
SCHEMA=/etc/temporal/schema/postgresql/v12

sql() {
    database="$1"
    shift
    temporal-sql-tool --plugin postgres12 --ep "$POSTGRES_SEEDS" -p "$PORT" -u "$POSTGRES_USER" --db "$database" "$@"
}

nc -z -w 10 "$POSTGRES_SEEDS" "$PORT"
for store in "${DBNAME:-temporal}:temporal" "${VISIBILITY_DBNAME:-temporal_visibility}:visibility"; do
    database="${store%%:*}"
    sql "$database" create
    sql "$database" setup-schema -v 0.0
    sql "$database" update-schema -d "$SCHEMA/${store##*:}/versioned"
done
echo "temporal schemas are up to date"
