"""Mock survey against the real MRS files: pixel statistics, line depths, noise.

    .venv/bin/python benchmarks/mock_vs_real.py MOCK_DIR

Prints, for real and mock files side by side: pixels per table and wavelength coverage,
coadd zero tails and masked-pixel fractions, header S/N against the median of
flux*sqrt(ivar), the consistency of the noise with IVAR (differences of two exposures
of one night divided by their combined sigma should have unit spread), the rates of the
defects the harsh mock options imitate (``spectra/mock/harsh.py``: masked pixels of
coadds (ORMASK) against exposures (PIXMASK) inside the grid windows, zero-flux pixels whose
IVAR is kept, with and without a mask bit), and the depths
of strong lines in the normalised coadd of the real star J230311.44+321335.5 and of
mock giants of similar type.
"""

import csv
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from spectra.io import read_spectrum_file  # noqa: E402
from spectra.processing.grids import GRIDS, WINDOWS  # noqa: E402
from spectra.processing.pipeline import preprocess  # noqa: E402

REAL = ROOT.parent / "shared" / "data" / "lamost_mrs"
JUNK = ("58268", "58269")
# Strong lines (vacuum Angstrom): Mg b, a Fe I blend, Ca I, H-alpha.
LINES = {"Mg I 5184.6": 5185.05, "Mg I 5174.1": 5174.11, "Ca I 6441.4": 6441.86, "Fe I 6495.0": 6496.57, "H-alpha": 6564.61}


def describe(name: str, files: list[Path]) -> None:
    sizes = {"coadd": {"blue": [], "red": []}, "exposure": {"blue": [], "red": []}}
    coverage = {"blue": [], "red": []}
    tails, masked, snr_ratio, chi = [], [], [], []
    window_masked = {"coadd": [], "exposure": []}
    zero_kept = {"coadd": [], "exposure": []}  # per arm: pixels with FLUX 0, IVAR > 0 (all, unmasked)
    for path in files:
        sf = read_spectrum_file(path)
        for spectrum in sf.spectra:
            for arm in ("blue", "red"):
                data = spectrum.arm(arm)
                sizes[spectrum.kind][arm].append(data.wavelength.size)
                coverage[arm].append((data.wavelength[0], data.wavelength[-1]))
                masked.append(1 - data.usable.mean())
                low, high = WINDOWS[arm]
                inside = (data.wavelength >= low) & (data.wavelength <= high)
                window_masked[spectrum.kind].append(np.mean(data.mask[inside] != 0))
                zero = (data.flux == 0) & (data.ivar > 0)
                zero_kept[spectrum.kind].append((int(zero.sum()), int((zero & (data.mask == 0)).sum())))
                good = data.ivar > 0
                if data.header_snr and data.header_snr > 10:
                    snr_ratio.append(np.median(data.flux[good] * np.sqrt(data.ivar[good])) / data.header_snr)
                if spectrum.kind == "coadd":
                    tails.append(int(np.argmax(data.usable[::-1])))
        exposures = [s for s in sf.spectra if s.kind == "exposure"]
        if len(exposures) >= 2 and exposures[0].blue.header_snr > 10:
            a, b = exposures[0].blue, exposures[1].blue
            if a.wavelength.size == b.wavelength.size and np.allclose(a.wavelength, b.wavelength):
                ok = a.usable & b.usable
                scale = np.median(a.flux[ok]) / np.median(b.flux[ok])
                sigma = np.sqrt(1 / a.ivar[ok] + scale**2 / b.ivar[ok])
                d = (a.flux[ok] - scale * b.flux[ok]) / sigma
                chi.append(1.4826 * np.median(np.abs(d - np.median(d))))
    print(f"--- {name}: {len(files)} files")
    for kind in ("coadd", "exposure"):
        for arm in ("blue", "red"):
            values = sizes[kind][arm]
            print(f"  {kind:8s} {arm:4s} pixels: median {np.median(values):.0f} (range {min(values)}-{max(values)})")
    for arm in ("blue", "red"):
        low, high = np.array(coverage[arm]).T
        print(f"  {arm} coverage: {np.median(low):.0f}-{np.median(high):.0f} A (first pixel {low.min():.0f}-{low.max():.0f})")
    print(f"  coadd zero tail at the red end: median {np.median(tails):.0f} pixels")
    print(f"  unusable pixels per arm: median {100 * np.median(masked):.2f}%, 95th percentile {100 * np.percentile(masked, 95):.2f}%")
    print(f"  median(flux*sqrt(ivar)) / header SNR: median {np.median(snr_ratio):.3f}")
    for kind, column in (("coadd", "ORMASK"), ("exposure", "PIXMASK")):
        shares = np.array(window_masked[kind])
        zeros = np.array(zero_kept[kind]).reshape(-1, 2)
        print(f"  {kind} arms, {column} != 0 inside the grid window: median {100 * np.median(shares):.2f}%, "
              f"95th percentile {100 * np.percentile(shares, 95):.2f}%; FLUX 0 with IVAR > 0: in {100 * np.mean(zeros[:, 0] > 0):.0f}% "
              f"of arms ({zeros[:, 0].sum()} pixels, {zeros[:, 1].sum()} of them without a mask bit)")
    if chi:
        print(f"  exposure-pair difference / combined sigma: robust spread {np.median(chi):.3f} (1 = noise as IVAR says; {len(chi)} pairs)")


def line_depths(files: list[Path], rv: np.ndarray | None = None) -> dict[str, float]:
    spectra = [read_spectrum_file(path).spectra[0] for path in files]
    result = preprocess(spectra, rv_supplied=rv if rv is not None else np.zeros((len(spectra), 2)))
    depths = {}
    for name, centre in LINES.items():
        arm = 0 if centre < 6000 else 1
        pixel = int(np.argmin(np.abs(GRIDS["blue" if arm == 0 else "red"] - centre)))
        window = result.flux[:, arm, max(pixel - 5, 0) : pixel + 6]
        depths[name] = float(np.median(1 - window.min(axis=1)))
    return depths


def main() -> None:
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    mock = Path(sys.argv[1])
    real_files = [p for p in sorted(REAL.iterdir()) if not any(j in p.name for j in JUNK)]
    mock_files = sorted((mock / "fits").rglob("*.fits.gz"))
    describe("real (7 good files)", real_files)
    describe("mock", mock_files)
    truth = {int(r["star"]): r for r in csv.DictReader(open(mock / "truth_stars.csv"))}
    spectra_truth = list(csv.DictReader(open(mock / "truth_spectra.csv")))
    giants = []
    for row in spectra_truth:
        star = truth[int(row["star"])]
        if row["kind"] == "coadd" and 4600 < float(star["teff"]) < 5000 and 2.2 < float(star["logg"]) < 3.0 and float(row["snr_blue"]) > 40:
            giants.append((mock / row["file"], float(row["rv_blue"]), float(row["rv_red"]), star))
    real_star = REAL / "med-58408-TD230151N343645T01_sp01-015.fits"
    real_depth = line_depths([real_star], np.array([[-53.8, -46.8]]))  # its measured RVs
    print("--- normalised line depths (1 - minimum within 0.5 A)")
    print("  real star J230311.44+321335.5 (labels unknown; best RV template a 4700 K giant; S/N 121): " + ", ".join(f"{k} {v:.2f}" for k, v in real_depth.items()))
    if giants:
        paths = [g[0] for g in giants[:20]]
        rv = np.array([[g[1], g[2]] for g in giants[:20]])
        mock_depth = line_depths(paths, rv)
        teff = np.median([float(g[3]["teff"]) for g in giants[:20]])
        feh = np.median([float(g[3]["fe_h"]) for g in giants[:20]])
        print(f"  mock giants 4600-5000 K, log g 2.2-3.0 ({len(paths)}; median Teff {teff:.0f}, [Fe/H] {feh:+.2f}): "
              + ", ".join(f"{k} {v:.2f}" for k, v in mock_depth.items()))


if __name__ == "__main__":
    main()
