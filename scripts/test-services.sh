#!/usr/bin/env bash
# Makes sure the services the tests use are installed. The tests start and stop their own
# throwaway server instances; this script only installs the programs where it can (root + apt-get).
set -u
have_postgres() { ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1; }

if have_postgres; then
  echo "services: PostgreSQL server binaries present"
elif [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "services: installing PostgreSQL (apt-get) for the catalog's PostgreSQL tests"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null && apt-get install -y -qq postgresql >/dev/null \
    || echo "services: could not install PostgreSQL; its tests will be skipped with the reason"
else
  echo "services: PostgreSQL not installed and no root/apt-get; its tests will be skipped with the reason"
fi
exit 0
