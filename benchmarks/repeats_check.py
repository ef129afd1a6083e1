"""Real repeat spectra as a judge: labels and uncertainties of one star observed many times.

Ingests the real LAMOST MRS files (default ``../shared/data/lamost_mrs``: three stars, one
of them on five nights and two plans; RVs measured against the spectrum model's
templates, as no RV catalog comes with them), predicts with the given model versions,
groups the spectra by star (the Star table, positional and Gaia-id matching at ingest), and
prints per star and label (``inference.repeats``):

- the repeat scatter of the exposures within a night (pooled) and of the coadds across
  nights, the median stated uncertainty, their ratio, and the ratio to the S/N part of the
  uncertainty alone;
- per night, the coadd minus the inverse-variance weighted mean of its own exposures, in
  units of their combined uncertainty;
- per night, the offset from the star's other nights in combined sigma, flagged (``!``)
  above 3;
- per night, the coadd's RV against its exposures' (the same wavelength solution, so
  they should agree), and whether the exposures' RVs vary beyond their errors (the
  star's lines moving during the night: a binary, say), which explains a night that
  stands off the star's others.

Runs in the configured Django database: the demo's (SQLite in var/, models from
``bash scripts/demo.sh --no-serve``) by default; files already ingested are not ingested
again.

    .venv/bin/python benchmarks/repeats_check.py --models demo-formal demo-alternate
"""

import argparse
import hashlib
import os
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DEFAULT_FILES = ROOT.parent / "shared" / "data" / "lamost_mrs"
LABELS = ("teff", "logg", "fe_h")
_FORMATS = {"teff": ".0f", "logg": ".3f", "fe_h": ".3f"}


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def repeats_collect(paths: list[Path], model_names: list[str], *, templates=None, labels=LABELS) -> dict:
    """Ingest ``paths`` (skipping files already in), predict with the models, and compute
    ``inference.repeats.repeat_statistics`` per model: ``{model name: {"stars": [...],
    "spectra": [rows]}}``. Every spectrum row holds id, star, designation, night, plan,
    kind, S/N and the labels with their uncertainties."""
    from django.db.models import Q

    from inference.models import LabelSet, ModelVersion
    from inference.network.uncertainty import noise_share
    from inference.repeats import repeat_statistics
    from inference.services.prediction import labelsets_predict, model_load
    from spectra.models import Spectrum
    from spectra.services.ingest import spectra_ingest

    spectra_ingest(paths=paths, templates=templates)
    hashes = [_sha256(path) for path in paths]
    spectra = (Spectrum.objects.filter(Q(source_sha256__in=hashes) | Q(copies__source_file__sha256__in=hashes))
               .filter(status=Spectrum.Status.PREPROCESSED).distinct().order_by("star_id", "lmjd", "kind", "lmjm", "id"))
    rows = list(spectra.values("id", "star_id", "star__designation", "lmjd", "plan_id", "kind", "snr_blue", "snr_red",
                               "medres_specid", "rv_blue", "rv_red", "rv_blue_err", "rv_red_err"))
    ids = [row["id"] for row in rows]
    versions = [ModelVersion.objects.get(name=name) for name in model_names]
    labelsets_predict(model_versions=versions, spectrum_ids=ids)
    out = {}
    for version in versions:
        network = model_load(version)
        by_spectrum = {ls.spectrum_id: ls for ls in LabelSet.objects.filter(model_version=version, spectrum_id__in=ids)}
        chosen = [row for row in rows if row["id"] in by_spectrum]
        values = np.array([[getattr(by_spectrum[r["id"]], name) for name in labels] for r in chosen], dtype=np.float64)
        errors = np.array([[getattr(by_spectrum[r["id"]], f"{name}_err") for name in labels] for r in chosen],
                          dtype=np.float64)
        snr = np.array([min(r["snr_blue"] or 0.0, r["snr_red"] or 0.0) for r in chosen])
        share = noise_share(network.noise_model, snr)[:, [network.label_names.index(name) for name in labels]]
        stars = repeat_statistics(np.array([r["star_id"] for r in chosen]), np.array([r["lmjd"] for r in chosen]),
                                  np.array([r["kind"] == Spectrum.Kind.COADD for r in chosen]), values.reshape(-1, len(labels)),
                                  errors.reshape(-1, len(labels)), list(labels), share)
        for row, value, error in zip(chosen, values, errors, strict=True):
            row[version.name] = (value, error)
        out[version.name] = {"stars": stars, "spectra": chosen}
    return out


def _f(value: float, name: str) -> str:
    return "-" if not np.isfinite(value) else format(value, _FORMATS.get(name, ".3f"))


def _r(value: float) -> str:
    return "-" if not np.isfinite(value) else f"{value:.2f}"


# A night's exposures whose RVs scatter about their weighted mean with a chi-square this
# improbable (for their stated errors) are marked: the star's lines moved during the night.
RV_VARIES_P = 1e-3


def rv_print(rows: list[dict]) -> None:
    """Per star and night: the coadd's RV minus the median of its exposures' RVs, per arm,
    and the exposures' spread (their raw pixels share one wavelength solution, so the
    coadd's RV should agree with theirs); and the exposures' chi-square about their
    weighted mean per degree of freedom, marked ``varies`` below ``RV_VARIES_P``."""
    from scipy.stats import chi2

    print("\nRVs (km/s) per night: coadd minus the median of its exposures, blue / red; exposures' spread "
          "(max - min) and chi2/dof about their weighted mean")
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault((row["star__designation"], row["lmjd"], row["plan_id"]), []).append(row)
    for (designation, night, plan), group in groups.items():
        coadds = [r for r in group if r["kind"] == "coadd"]
        exposures = [r for r in group if r["kind"] == "exposure"]
        if not coadds or not exposures:
            continue
        parts = []
        for arm in ("blue", "red"):
            values = np.array([r[f"rv_{arm}"] for r in exposures], dtype=np.float64)
            errors = np.array([r[f"rv_{arm}_err"] for r in exposures], dtype=np.float64)
            known = np.isfinite(values)
            values, errors = values[known], errors[known]
            coadd = coadds[0][f"rv_{arm}"]
            if values.size == 0 or coadd is None:
                parts.append(f"{arm} -")
                continue
            varies = ""
            if values.size > 1 and np.all(np.isfinite(errors) & (errors > 0)):
                weights = 1.0 / errors**2
                mean = np.sum(weights * values) / np.sum(weights)
                chi_square, dof = float(np.sum(weights * (values - mean) ** 2)), values.size - 1
                varies = f", chi2/dof {chi_square / dof:.1f}{' varies' if chi2.sf(chi_square, dof) < RV_VARIES_P else ''}"
            parts.append(f"{arm} {coadd:.2f} - {np.median(values):.2f} = {coadd - np.median(values):+.2f} "
                         f"(spread {np.ptp(values):.2f}, {values.size} exp{varies})")
        print(f"  {designation} {night} {plan:<20} " + "; ".join(parts))


def repeats_print(results: dict, labels=LABELS) -> None:
    if results:
        rv_print(next(iter(results.values()))["spectra"])
    for model, result in results.items():
        print(f"\n=== model {model}")
        designation = {r["star_id"]: r["star__designation"] for r in result["spectra"]}
        for star in result["stars"]:
            print(f"\n{designation[star['star']]}: {star['n_exposures']} exposures, {star['n_coadds']} coadds, "
                  f"nights {', '.join(map(str, star['nights']))}")
            for row in (r for r in result["spectra"] if r["star_id"] == star["star"]):
                value, error = row[model]
                print(f"  {row['lmjd']} {row['plan_id']:<20} {row['kind']:<8} S/N {row['snr_blue'] or 0:5.0f}/{row['snr_red'] or 0:4.0f}  "
                      + "  ".join(f"{name} {_f(v, name)} +- {_f(e, name)}" for name, v, e in zip(labels, value, error, strict=True)))
            print("  | label | exposures: scatter (dof) | stated sigma | ratio | S/N-part sigma | ratio "
                  "| coadds across nights: scatter (dof) | stated sigma | ratio |")
            for name in labels:
                s = star["labels"][name]
                print(f"  | {name} | {_f(s['exposure_scatter'], name)} ({s['exposure_dof']}) | {_f(s['exposure_sigma'], name)} "
                      f"| {_r(s['exposure_ratio'])} | {_f(s['exposure_noise_sigma'], name)} | {_r(s['exposure_noise_ratio'])} "
                      f"| {_f(s['coadd_scatter'], name)} ({s['coadd_dof']}) | {_f(s['coadd_sigma'], name)} | {_r(s['coadd_ratio'])} |")
            for night in star["per_night"]:
                parts = []
                for name in labels:
                    n = night["labels"][name]
                    parts.append(f"{name}: coadd-exp {_f(n['coadd_minus_exposures'], name)} ({_r(n['coadd_z'])} sigma), "
                                 f"offset {_f(n['offset'], name)} ({_r(n['offset_z'])} sigma){' !' if n['flagged'] else ''}")
                print(f"  night {night['night']} ({night['n_exposures']} exp): " + "; ".join(parts))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=Path, default=DEFAULT_FILES, help="A directory of LAMOST MRS files, or one file.")
    parser.add_argument("--models", nargs="+", default=["demo-formal", "demo-alternate"], help="Model version names.")
    args = parser.parse_args()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "spcanet_site.settings.local")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import django

    django.setup()
    from spectra.spectrum_model_files import rv_templates_load

    paths = sorted(p for p in args.files.iterdir() if p.is_file()) if args.files.is_dir() else [args.files]
    repeats_print(repeats_collect(paths, args.models, templates=rv_templates_load()))
    print("\ncommand: " + " ".join([Path(sys.executable).name, *sys.argv]))


if __name__ == "__main__":
    main()
