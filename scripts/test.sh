#!/usr/bin/env bash
# Set up and run the test suite against a real PostgreSQL and a real Redis.
#   bash scripts/test.sh [pytest arguments]
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
source "$ROOT/scripts/services.sh"

ensure_venv requirements-dev.txt
ensure_postgres
ensure_redis

export DJANGO_SETTINGS_MODULE=spcanet_site.settings.test
echo ">> spectrum model (RV templates; cached in ~/.cache/spcanet)"
.venv/bin/python manage.py fetch_spectrum_model
echo ">> checking for missing migrations"
.venv/bin/python manage.py makemigrations --check --dry-run
echo ">> lint"
.venv/bin/ruff check .
echo ">> tests"
.venv/bin/python -m pytest "$@"
