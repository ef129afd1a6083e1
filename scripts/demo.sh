#!/usr/bin/env bash
# The main job on the embedded default (SQLite, in-process tasks): set up, build a demo
# catalog, and serve the site at http://127.0.0.1:8000/.
#   bash scripts/demo.sh            # build (once) and serve
#   bash scripts/demo.sh --no-serve # build only
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

serve=1
[ "${1:-}" = "--no-serve" ] && serve=0

ensure_venv requirements.txt
export DJANGO_SETTINGS_MODULE=spcanet_site.settings.local
unset DATABASE_URL CELERY_BROKER_URL

echo ">> database (SQLite at var/spcanet.sqlite3)"
.venv/bin/python manage.py migrate --noinput -v 0
echo ">> spectrum model (RV templates and mock spectra; cached in ~/.cache/spcanet)"
.venv/bin/python manage.py fetch_spectrum_model

survey=var/demo-survey
if [ -f "$survey/manifest.json" ]; then
  echo ">> demo survey already generated ($survey)"
elif .venv/bin/python -c "from pathlib import Path; import sys; sys.exit(0 if Path('../shared/data/isochrones/MIST_iso_7Gyr.csv').exists() or '${ISOCHRONE_PATH:-}' else 1)"; then
  echo ">> generating a mock MRS survey of 150 stars ($survey)"
  rm -rf "$survey"
  .venv/bin/python manage.py make_mock_survey "$survey" --stars 150 --seed 0
else
  echo "!! no MIST isochrone table (../shared/data/isochrones or ISOCHRONE_PATH): skipping the mock survey"
fi
if [ -d "$survey/fits" ]; then
  echo ">> ingesting the mock survey (RVs measured by cross-correlation)"
  .venv/bin/python manage.py ingest_spectra "$survey/fits"
fi
if .venv/bin/python manage.py shell -v 0 -c "from inference.models import CatalogRelease; raise SystemExit(0 if CatalogRelease.objects.filter(name='demo-0').exists() else 1)"; then
  echo ">> demo catalog already built"
else
  echo ">> building the demo catalog"
  .venv/bin/python manage.py make_demo_catalog --stars 2000 --seed 0
fi
if [ ! -f var/admin-password.txt ]; then
  password="$(.venv/bin/python -c 'import secrets; print(secrets.token_urlsafe(12))')"
  DJANGO_SUPERUSER_PASSWORD="$password" .venv/bin/python manage.py createsuperuser --noinput \
    --username admin --email admin@localhost >/dev/null
  echo "$password" > var/admin-password.txt
  chmod 600 var/admin-password.txt
fi

cat <<MSG

The demo is ready: the mock survey's spectra are ingested (admin: Spectra, Source files),
and a synthetic demo catalog (random labels, see README) is published.
  API docs         http://127.0.0.1:8000/api/docs/
  release entries  http://127.0.0.1:8000/api/v1/releases/demo-0/entries/?teff_min=4500&teff_max=5000&snr_min=20&flag=1
  CSV export       http://127.0.0.1:8000/api/v1/releases/demo-0/export.csv?flag=1
  admin            http://127.0.0.1:8000/admin/  (user admin, password in var/admin-password.txt)
  mock survey      var/demo-survey/ (FITS files, reference catalogs, truth, manifest.json)
MSG
if [ "$serve" = 1 ]; then
  exec .venv/bin/python manage.py runserver 127.0.0.1:8000
fi
