#!/usr/bin/env bash
# Installs the Debian packages that the test suite needs beyond Python: PostgreSQL and
# HAProxy for the multi-replica tests, kubectl to render the Kubernetes manifests,
# docker-compose to validate the compose files without an engine, Chromium and its driver
# for the browser tests, wrk for the HTTP benchmark and h2load (nghttp2-client) for gRPC load.
# Run as root. Idempotent: what is installed is skipped, and apt-get update runs once, only
# when something is missing.
# Usage: .ci/system-packages.sh
set -euo pipefail

PACKAGES=(postgresql haproxy docker-compose chromium chromium-driver wrk nghttp2-client)

say() { printf 'system-packages: %s\n' "$*"; }
die() { printf 'system-packages: FAILED: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "must run as root (apt-get install)"

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q '^install ok installed$'; }

missing=()
for pkg in "${PACKAGES[@]}"; do
    installed "$pkg" || missing+=("$pkg")
done
# Node.js runs the page's unit tests (node --test); any node on PATH does.
command -v node >/dev/null || missing+=(nodejs)
# kubectl is not in Debian's own archive (its kubernetes-client is 1.20, whose kustomize is
# too old for the manifests); machines of this kind come with it. Any kubectl on PATH does.
need_kubectl=false
command -v kubectl >/dev/null || need_kubectl=true

if [ "${#missing[@]}" -eq 0 ] && ! "$need_kubectl"; then
    say "all present: ${PACKAGES[*]} kubectl"
    exit 0
fi

export DEBIAN_FRONTEND=noninteractive
say "apt-get update (missing: ${missing[*]}$("$need_kubectl" && echo ' kubectl'))"
apt-get update -q >/dev/null ||
    die "apt-get update failed: the Debian package registry is unreachable, so ${missing[*]} cannot be installed"

if "$need_kubectl"; then
    if [ -n "$(apt-cache policy kubectl 2>/dev/null | awk '/Candidate:/ && $2 != "(none)" { print $2 }')" ]; then
        missing+=(kubectl)
    else
        die "kubectl is not installed and no configured package source has it; install a kubectl of 1.27 or newer (its built-in kustomize renders deploy/kubernetes), e.g. from the Kubernetes project's packages"
    fi
fi

if [ "${#missing[@]}" -gt 0 ]; then
    say "installing ${missing[*]}"
    apt-get install -y -q "${missing[@]}" >/dev/null ||
        die "apt-get install ${missing[*]} failed"
fi

# The commands the tests look for (Debian keeps some daemons outside a normal PATH).
export PATH="$PATH:/usr/sbin:/sbin"
for cmd in haproxy kubectl docker-compose chromium chromedriver wrk node; do
    command -v "$cmd" >/dev/null || die "$cmd is not on PATH after installing it"
done
ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || die "pg_ctl not found under /usr/lib/postgresql"
say "done: $(haproxy -v | head -n 1); kubectl $(kubectl version --client 2>/dev/null | head -n 1)"
