#!/usr/bin/env bash
# Installs the PostgreSQL server programs that harness/postgres.py needs (initdb, pg_ctl).
# The tests start their own throwaway cluster as the unprivileged 'postgres' user; nothing here
# starts a server. Run as root. Idempotent: does nothing when initdb is already there.
# Usage: bash .ci/postgres-setup.sh
set -euo pipefail

say() { printf 'postgres-setup: %s\n' "$*"; }
die() { printf 'postgres-setup: FAILED: %s\n' "$*" >&2; exit 1; }

if compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null; then
    say "found $(ls -d /usr/lib/postgresql/*/bin/initdb | sort -V | tail -1)"
    exit 0
fi
[ "$(id -u)" -eq 0 ] || die "initdb is missing and installing it needs root (apt-get install postgresql)"
say "installing postgresql"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q >/dev/null ||
    die "apt-get update failed: the Debian package registry is unreachable, so postgresql cannot be installed"
apt-get install -y -q --no-install-recommends postgresql >/dev/null ||
    die "apt-get install postgresql failed"
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null ||
    die "postgresql is installed but no /usr/lib/postgresql/*/bin/initdb exists"
id postgres >/dev/null 2>&1 || die "the postgresql package created no 'postgres' user"
say "installed $(ls -d /usr/lib/postgresql/*/bin/initdb | sort -V | tail -1)"
