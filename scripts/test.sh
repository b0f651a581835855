#!/usr/bin/env bash
# The README's test command: installs what the tests need and runs the whole suite.
#   bash scripts/test.sh [pytest args...]
# Creates .venv (or reuses it), installs ccdflow with its test, postgres, parsl and docs extras,
# starts a throwaway PostgreSQL server (Debian's `postgresql` package, installed when missing)
# for the registry tests, installs Debian's chromium for the browser tests when missing, runs
# pytest, builds the documentation (sphinx-build -W) and stops the server on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${CCDFLOW_VENV:-.venv}
PYTHON=${PYTHON:-python3}
if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null 2>&1 || true
"$VENV/bin/python" -m pip install -q -e ".[test,postgres,parsl,docs]"
export PATH="$PWD/$VENV/bin:$PATH"

# --- PostgreSQL for the registry tests (see ../shared/docs/postgres-ci.md) ---
if [ -z "${BUTLER_TEST_POSTGRES_URL:-}" ] && [ "$(id -u)" = "0" ]; then
  export DEBIAN_FRONTEND=noninteractive
  if ! ls -d /usr/lib/postgresql/*/bin >/dev/null 2>&1; then
    apt-get update -qq && apt-get install -y -qq postgresql >/dev/null
  fi
  PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
  PGPORT=${PGPORT:-55433}
  while (echo >/dev/tcp/127.0.0.1/$PGPORT) >/dev/null 2>&1; do PGPORT=$((PGPORT + 1)); done
  PGROOT=$(mktemp -d /tmp/pgci.XXXXXX); chown postgres:postgres "$PGROOT"
  ( cd "$PGROOT"
    runuser -u postgres -- "$PGBIN/initdb" -D "$PGROOT/data" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >"$PGROOT/initdb.log"
    runuser -u postgres -- "$PGBIN/pg_ctl" -D "$PGROOT/data" -l "$PGROOT/server.log" -w -t 60 \
      -o "-c listen_addresses=127.0.0.1 -p $PGPORT -k $PGROOT -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200" start >/dev/null
    runuser -u postgres -- "$PGBIN/createdb" -h 127.0.0.1 -p "$PGPORT" -U postgres butler_test )
  export BUTLER_TEST_POSTGRES_URL="postgresql+psycopg://postgres@127.0.0.1:$PGPORT/butler_test"
  trap 'cd /tmp; runuser -u postgres -- "$PGBIN/pg_ctl" -D "$PGROOT/data" -m fast -w stop >/dev/null 2>&1 || true; rm -rf "$PGROOT"' EXIT
fi

# --- Chromium for the browser tests of the report page (marker `browser`; Debian's packages) ---
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = "0" ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq chromium chromium-driver >/dev/null
fi

# --- the type checker: butler/ and pipeline/{graph,execution} are clean and must stay so ---
"$VENV/bin/python" -m mypy butler || { echo "mypy butler failed" >&2; exit 1; }
"$VENV/bin/python" -m mypy pipeline/graph pipeline/execution || { echo "mypy pipeline/graph pipeline/execution failed" >&2; exit 1; }

set +e
"$VENV/bin/python" -m pytest -n 2 --dist loadfile -q "$@"
status=$?
set -e
if [ "$status" = "5" ]; then
  echo "no test ran: failing" >&2
  exit 1
fi
# --- the documentation site (whole-suite runs, or CCDFLOW_BUILD_DOCS=1): every warning is an error ---
if [ "$#" = "0" ] || [ -n "${CCDFLOW_BUILD_DOCS:-}" ]; then
  DOCS_OUT=$(mktemp -d /tmp/ccdflow-docs.XXXXXX)
  if ! "$VENV/bin/python" -m sphinx -W --keep-going -q -j 2 -b html docs "$DOCS_OUT"; then
    echo "the documentation build (sphinx-build -W docs) failed" >&2
    status=1
  fi
  rm -rf "$DOCS_OUT" docs/api/generated
fi
exit "$status"
