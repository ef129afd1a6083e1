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
  echo ">> generating a mock MRS survey of 300 stars ($survey)"
  rm -rf "$survey"
  .venv/bin/python manage.py make_mock_survey "$survey" --stars 300 --seed 0 --no-ideal  # the demo needs no ideal arrays
else
  echo "!! no MIST isochrone table (../shared/data/isochrones or ISOCHRONE_PATH): skipping the mock survey"
fi
if [ -d "$survey/fits" ]; then
  echo ">> ingesting the mock survey through the pipeline (in-process; RVs measured by cross-correlation)"
  .venv/bin/python manage.py run_pipeline "$survey/fits" --stages ingest --name demo-ingest
fi
exists() {  # exists MODEL NAME: is there a row of inference.MODEL with this name?
  .venv/bin/python manage.py shell -v 0 -c \
    "from inference.models import $1; raise SystemExit(0 if $1.objects.filter(name='$2').exists() else 1)"
}
if [ -d "$survey/fits" ]; then
  release=demo-1
  echo ">> importing the survey's reference labels (APOGEE-Payne-like)"
  .venv/bin/python manage.py import_reference_labels "$survey/reference_labels.csv" --name demo-reference
  if exists ModelVersion demo-formal; then
    echo ">> demo models already trained"
  else
    echo ">> training the formal and alternate networks (CPU; a few minutes)"
    .venv/bin/python manage.py train_models --reference demo-reference --prefix demo --max-epochs 20 --patience 4
  fi
  if exists CatalogRelease "$release"; then
    echo ">> release $release already published"
  else
    echo ">> predicting with both models and publishing release $release through the pipeline"
    .venv/bin/python manage.py run_pipeline --stages predict,release --formal demo-formal \
      --alternate demo-alternate --release "$release" --publish --name demo-release
  fi
  echo ">> validating $release against the survey's APOGEE-, GALAH- and RAVE-like catalogs"
  .venv/bin/python manage.py import_reference_survey "$survey/apogee_like.fits" --name apogee-like --format apogee-dr14
  .venv/bin/python manage.py import_reference_survey "$survey/galah_like.fits" --name galah-like --format galah-dr2
  .venv/bin/python manage.py import_reference_survey "$survey/rave_like.csv" --name rave-like --format rave-dr5
  .venv/bin/python manage.py validate_release "$release"
else
  release=demo-0
  if exists CatalogRelease "$release"; then
    echo ">> demo catalog already built"
  else
    echo ">> building a synthetic demo catalog (no mock survey without the isochrone table)"
    .venv/bin/python manage.py make_demo_catalog --stars 2000 --seed 0
  fi
fi
if [ ! -f var/admin-password.txt ]; then
  password="$(.venv/bin/python -c 'import secrets; print(secrets.token_urlsafe(12))')"
  DJANGO_SUPERUSER_PASSWORD="$password" .venv/bin/python manage.py createsuperuser --noinput \
    --username admin --email admin@localhost >/dev/null
  echo "$password" > var/admin-password.txt
  chmod 600 var/admin-password.txt
fi

cat <<MSG

The demo is ready: release $release is published.
  API docs         http://127.0.0.1:8000/api/docs/
  release entries  http://127.0.0.1:8000/api/v1/releases/$release/entries/?teff_min=4500&teff_max=5000&snr_min=20&flag=1
  CSV export       http://127.0.0.1:8000/api/v1/releases/$release/export.csv?flag=1
  Kiel diagram     http://127.0.0.1:8000/api/v1/releases/$release/kiel.png
  model evaluation http://127.0.0.1:8000/api/v1/model-versions/demo-formal/evaluation.png (Fig. 7)
  validation       http://127.0.0.1:8000/releases/$release/validation/ (Table 1, plots, CSV)
  processing runs  http://127.0.0.1:8000/admin/tasks/processingrun/
  admin            http://127.0.0.1:8000/admin/  (user admin, password in var/admin-password.txt)
  mock survey      var/demo-survey/ (FITS files, reference catalogs, truth, manifest.json)
MSG
if [ "$serve" = 1 ]; then
  exec .venv/bin/python manage.py runserver 127.0.0.1:8000
fi
