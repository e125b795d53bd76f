#!/bin/bash
# Apply sql/migrations/NNN_*.sql not yet applied, in order, each in its own
# transaction together with its schema_migrations row; then, with --seed,
# sql/seed_demo.sql. Idempotent and safe to run concurrently (an advisory lock
# serialises runs; the "already applied?" check happens under the lock).
#
#   sql/migrate.sh [--seed] DSN | psql connection options...
#   sql/migrate.sh "host=127.0.0.1 port=5433 dbname=hamrahi user=postgres" --seed
#   sql/migrate.sh -h 127.0.0.1 -p 5433 -U postgres -d hamrahi
set -euo pipefail

sql_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
seed=0
conn=()
for arg in "$@"; do
    case $arg in
        --seed) seed=1 ;;
        --help) sed -n '2,9s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"; exit 0 ;;
        *) conn+=("$arg") ;;
    esac
done
lock_key=2033001   # any constant shared by every run of this script

psql_tx() {
    PGOPTIONS="${PGOPTIONS:-} -c client_min_messages=warning" \
        psql -X -q -v ON_ERROR_STOP=1 --single-transaction "${conn[@]}"
}

psql_tx <<SQL
SELECT 1 AS locked FROM pg_advisory_xact_lock($lock_key) \gset
CREATE TABLE IF NOT EXISTS schema_migrations (
    version     text PRIMARY KEY,
    applied_at  timestamptz NOT NULL DEFAULT now()
);
SQL

# Each migration runs as: lock, "applied?" check, the file's text, its
# schema_migrations row; all in one transaction (the text is inlined rather
# than \i'd so that any path works).
apply_once() {
    local version=$1 file=$2
    {
        printf '%s\n' \
            "SELECT 1 AS locked FROM pg_advisory_xact_lock($lock_key) \\gset" \
            "SELECT EXISTS (SELECT 1 FROM schema_migrations" \
            "    WHERE version = '$version') AS already_applied \\gset" \
            '\if :already_applied' '\else' \
            "\\echo applying $(basename "$file")"
        cat "$file"
        printf '\n%s\n' \
            "INSERT INTO schema_migrations (version) VALUES ('$version');" \
            '\endif'
    } | psql_tx
}

shopt -s nullglob
for file in "$sql_dir"/migrations/[0-9][0-9][0-9]_*.sql; do
    name=$(basename "$file")
    apply_once "${name%%_*}" "$file"
done

if [ "$seed" = 1 ]; then
    {
        printf '%s\n' \
            "SELECT 1 AS locked FROM pg_advisory_xact_lock($lock_key) \\gset"
        cat "$sql_dir/seed_demo.sql"
    } | psql_tx
fi
