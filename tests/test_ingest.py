import shutil
from pathlib import Path

import numpy as np
import pytest
from django.core.management import call_command

from core.flags import SPECTRUM_FLAGS
from spectra.array_store import ArrayStore
from spectra.models import SourceFile, Spectrum, SpectrumCopy, Star
from spectra.services.ingest import spectra_ingest

from .shared_data import JUNK_FILES, real_file, real_files

pytestmark = pytest.mark.django_db


@pytest.fixture
def survey_dir(tmp_path):
    """The real files in a nested tree, plus a truncated copy, a text file and a non-MRS FITS."""
    files = real_files()
    root = tmp_path / "survey"
    for i, path in enumerate(files):
        target = root / f"night{i % 3}" / path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, target)
    gz = next(p for p in files if p.name.endswith(".gz") and p.name not in JUNK_FILES)
    (root / "bad").mkdir()
    (root / "bad" / "truncated.fits.gz").write_bytes(gz.read_bytes()[:40_000])
    (root / "bad" / "readme.fits").write_text("not a FITS file at all\n")
    from astropy.io import fits

    fits.PrimaryHDU(np.zeros((3, 3))).writeto(root / "bad" / "image.fits")
    return root, files


def rv_catalog_for(files):
    """Catalog RVs for every file (as an input catalog would give), so no templates are needed."""
    from spectra.io import read_spectrum_file

    return {(read_spectrum_file(p).obsid, None): (-20.0, -18.0) for p in files}


def test_ingest_tree_records_failures_and_goes_on(survey_dir, settings, tmp_path):
    settings.SPECTRA_ARRAY_ROOT = tmp_path / "arrays"
    root, files = survey_dir
    summary = spectra_ingest(paths=[root], rv_catalog=rv_catalog_for(files), batch_files=4)
    assert summary.files_seen == len(files) + 3
    assert summary.files_ingested == len(files)
    assert dict(summary.failures) == {"corrupt": 1, "not_fits": 1, "unknown_format": 1}
    failed = {f.path.rsplit("/", 1)[1]: (f.error_kind, f.error_message) for f in SourceFile.objects.filter(status="failed")}
    assert failed["truncated.fits.gz"][0] == "corrupt" and "truncated.fits.gz" in failed["truncated.fits.gz"][1]
    assert failed["readme.fits"][0] == "not_fits"
    # One star per object: the KIC star's two designations (0.3 arcsec apart) are one star.
    assert Star.objects.count() == 3
    kic = Star.objects.get(designation__startswith="LAMOST J192814.09+4355")
    assert kic.gaia_source_id == 2125971226269667584
    assert set(kic.spectra.values_list("plan_id", flat=True)) == {"HIP95119KP01", "TD192102N424113K01", "TD193637N444141K01"}
    total = sum(summary.spectra_by_status.values())
    assert Spectrum.objects.count() == total == summary.spectra_written
    junk = Spectrum.objects.filter(source_path__contains=JUNK_FILES[0])
    assert junk.exists() and all(s.status == Spectrum.Status.REJECTED for s in junk)
    assert all("LOW_SNR_BLUE" in s.flag_names for s in junk)


def test_ingest_stores_arrays_and_header_facts(survey_dir, settings, tmp_path):
    settings.SPECTRA_ARRAY_ROOT = tmp_path / "arrays"
    root, files = survey_dir
    spectra_ingest(paths=[root], rv_catalog=rv_catalog_for(files))
    coadd = Spectrum.objects.get(medres_specid="20181016-TD230151N343645T01-01-015-coadd-DR7")
    assert (coadd.kind, coadd.obsid, coadd.lmjd, coadd.spectrograph, coadd.fiber) == ("coadd", 681001015, 58408, 1, 15)
    assert coadd.snr_blue == pytest.approx(120.75) and coadd.snr_red == pytest.approx(280.75)
    assert (coadd.rv_blue, coadd.rv_red, coadd.rv_source) == (-20.0, -18.0, "catalog")
    # Its masked pixels are filled from the exposures of its file, and said.
    assert coadd.status == Spectrum.Status.PREPROCESSED and coadd.flag_names == ["COADD_MASK_FILLED"]
    # A coadd with unmasked pixels of flux exactly 0 and IVAR kept: masked (then filled), and said.
    kic = Spectrum.objects.get(medres_specid="20190611-TD192102N424113K01-12-076-coadd-DR7")
    assert kic.flag_names == ["ZERO_FLUX_MASKED", "COADD_MASK_FILLED"]
    filled = SPECTRUM_FLAGS["COADD_MASK_FILLED"].mask
    assert not any(flags & filled for flags in Spectrum.objects.filter(kind="exposure").values_list("flags", flat=True))
    exposure = Spectrum.objects.get(medres_specid="20181016-TD230151N343645T01-01-015-84107311-DR7")
    assert exposure.exptime == 1200.0 and exposure.lmjm == 84107311
    arrays = ArrayStore(settings.SPECTRA_ARRAY_ROOT).read(coadd.array_shard, [coadd.array_row])
    assert arrays.shape == (1, 2, 2, 4000) and arrays.dtype == np.float32
    flux, ivar = arrays[0, 0], arrays[0, 1]
    assert 0.85 < np.median(flux[0]) < 1.0 and np.all(ivar >= 0) and (ivar > 0).mean() > 0.95


def test_reingesting_changes_nothing_and_a_changed_file_updates_in_place(survey_dir, settings, tmp_path):
    settings.SPECTRA_ARRAY_ROOT = tmp_path / "arrays"
    root, files = survey_dir
    catalog = rv_catalog_for(files)
    spectra_ingest(paths=[root], rv_catalog=catalog)
    before = list(Spectrum.objects.order_by("id").values_list("id", "medres_specid", "updated_at"))
    again = spectra_ingest(paths=[root], rv_catalog=catalog)
    assert again.files_unchanged == len(files) and again.spectra_written == 0
    assert list(Spectrum.objects.order_by("id").values_list("id", "medres_specid", "updated_at")) == before
    # The same file reached by another path is still the same content.
    copy = tmp_path / "elsewhere" / files[0].name
    copy.parent.mkdir()
    shutil.copy(files[0], copy)
    assert spectra_ingest(paths=[copy], rv_catalog=catalog).files_unchanged == 1
    # Failed files are retried on the next run (they may have been repaired).
    assert spectra_ingest(paths=[root / "bad"]).failures["corrupt"] == 1
    assert SourceFile.objects.filter(status="failed").count() == 3


def _as_if_made_by(spectra, version: str, **changes) -> None:
    """The spectra, and every copy of them read so far, as an installation of ``version`` left them."""
    SpectrumCopy.objects.filter(spectrum__in=spectra).update(preprocessing_version=version)
    spectra.update(preprocessing_version=version, **changes)


def test_spectra_of_an_older_preprocessing_version_are_preprocessed_again_once(survey_dir, settings, tmp_path):
    from spectra.processing.pipeline import PREPROCESSING_VERSION

    settings.SPECTRA_ARRAY_ROOT = tmp_path / "arrays"
    root, files = survey_dir
    catalog = rv_catalog_for(files)
    spectra_ingest(paths=[root], rv_catalog=catalog)
    coadd = Spectrum.objects.get(medres_specid="20181016-TD230151N343645T01-01-015-coadd-DR7")
    of_file = Spectrum.objects.filter(source_sha256=coadd.source_sha256)
    before = dict(of_file.values_list("id", "array_shard"))
    newer = of_file.exclude(pk=coadd.pk).order_by("id").first()
    _as_if_made_by(of_file, "1.0")
    # A spectrum a newer installation made (a shared database) is never replaced by older code.
    _as_if_made_by(Spectrum.objects.filter(pk=newer.pk), "99.0")
    total = Spectrum.objects.count()
    again = spectra_ingest(paths=[root], rv_catalog=catalog)
    assert again.files_stale == 1 and again.files_unchanged == len(files) - 1
    assert again.spectra_written == len(before) - 1 and again.copies_not_used == 1
    assert Spectrum.objects.count() == total  # the same rows, preprocessed again
    after = dict(of_file.values_list("id", "array_shard"))
    assert set(after) == set(before)
    assert dict(of_file.values_list("id", "preprocessing_version")) == {
        pk: "99.0" if pk == newer.pk else PREPROCESSING_VERSION for pk in before}
    assert after[newer.pk] == before[newer.pk] and after[coadd.pk] != before[coadd.pk]
    coadd.refresh_from_db()
    assert coadd.status == Spectrum.Status.PREPROCESSED and (coadd.rv_blue, coadd.rv_red) == (-20.0, -18.0)
    assert again.lines()[:2] == [f"files: {len(files) + 3} seen, 1 ingested, {len(files) - 1} unchanged, 3 failed",
                                 "  ingested again, their spectra of an older preprocessing version: 1"]
    third = spectra_ingest(paths=[root], rv_catalog=catalog)
    assert third.files_stale == 0 and third.files_unchanged == len(files) and third.spectra_written == 0


def test_ingest_stale_reads_the_recorded_files_again_with_their_catalog_rvs(survey_dir, settings, tmp_path, capsys):
    from spectra.processing.pipeline import PREPROCESSING_VERSION

    settings.SPECTRA_ARRAY_ROOT = tmp_path / "arrays"
    root, files = survey_dir
    from spectra.io import read_spectrum_file

    catalog = tmp_path / "rv.csv"
    catalog.write_text("obsid,rv_blue,rv_red,lmjm\n" + "".join(f"{read_spectrum_file(p).obsid},-5.0,-4.0,\n" for p in files))
    call_command("ingest_spectra", str(root), "--rv-catalog", str(catalog), "--no-rv-measurement")
    capsys.readouterr()
    call_command("ingest_spectra", "--stale", "--no-rv-measurement")
    assert capsys.readouterr().out == "older preprocessing: 0 spectra (none)\n"
    good = Spectrum.objects.get(medres_specid="20181016-TD230151N343645T01-01-015-coadd-DR7")
    gone = Spectrum.objects.filter(status=Spectrum.Status.PREPROCESSED).exclude(
        source_sha256=good.source_sha256).order_by("id").first()
    both = Spectrum.objects.filter(source_sha256__in=[good.source_sha256, gone.source_sha256])
    n_good = Spectrum.objects.filter(source_sha256=good.source_sha256).count()
    n_gone = both.count() - n_good
    _as_if_made_by(both, "1.0")
    Path(gone.source_path).unlink()  # a file no longer where it was ingested from
    call_command("ingest_spectra", "--stale", "--no-rv-measurement")  # no catalog given: the stored RVs
    out = capsys.readouterr().out
    assert f"older preprocessing: {n_good + n_gone} spectra ({n_good + n_gone} of version 1.0)" in out
    assert "files: 2 seen, 1 ingested, 0 unchanged, 1 failed" in out
    assert f"spectra: {n_good} written" in out
    rows = Spectrum.objects.filter(source_sha256=good.source_sha256)
    assert set(rows.values_list("preprocessing_version", "rv_source", "rv_blue", "rv_red")) == {
        (PREPROCESSING_VERSION, "catalog", -5.0, -4.0)}
    # The missing file is recorded and its spectra keep what they had, for a later run.
    assert SourceFile.objects.filter(path=gone.source_path, status="failed").exists()
    assert set(Spectrum.objects.filter(source_sha256=gone.source_sha256).values_list("preprocessing_version", flat=True)) == {"1.0"}


def test_a_stale_spectrum_is_never_replaced_by_a_worse_result(survey_dir, settings, tmp_path, capsys):
    """Spectra whose RVs were measured, preprocessed again where no RV can be measured:
    they keep what they had, at their version, and say so; nothing is lost."""
    settings.SPECTRA_ARRAY_ROOT = tmp_path / "arrays"
    root, files = survey_dir
    spectra_ingest(paths=[root], rv_catalog=rv_catalog_for(files))
    coadd = Spectrum.objects.get(medres_specid="20181016-TD230151N343645T01-01-015-coadd-DR7")
    of_file = Spectrum.objects.filter(source_sha256=coadd.source_sha256)
    _as_if_made_by(of_file, "1.0", rv_source=Spectrum.RVSource.MEASURED)
    before = sorted(of_file.values_list("id", "status", "array_shard", "array_row", "rv_blue"))
    call_command("ingest_spectra", "--stale", "--no-rv-measurement")
    out = capsys.readouterr().out
    n = len(before)
    assert f"kept at their older preprocessing version, this version's result being worse (failed or rejected " \
           f"where it was not): {n}" in out and "spectra: 0 written" in out
    # ... with this version's result for them, and what to do about it.
    assert f"    this version's result, failed: {n}\n" in out and f"    this version's result, flag RV_UNRELIABLE: {n}\n" in out
    assert "give its RVs with --rv-catalog, or run without --no-rv-measurement" in out
    assert sorted(of_file.values_list("id", "status", "array_shard", "array_row", "rv_blue")) == before
    assert set(of_file.values_list("preprocessing_version", flat=True)) == {"1.0"}  # still waiting, still counted
    # This version has read their file: an ingest of the tree does not read it again, for nothing ...
    shards = set((settings.SPECTRA_ARRAY_ROOT).rglob("*.npy"))
    assert spectra_ingest(paths=[root]).files_unchanged == len(files)
    assert set((settings.SPECTRA_ARRAY_ROOT).rglob("*.npy")) == shards
    # ... and --stale tries again, which, with the RVs now given, replaces them.
    catalog = tmp_path / "rv.csv"
    catalog.write_text(f"obsid,rv_blue,rv_red,lmjm\n{coadd.obsid},-50.0,-49.0,\n")
    call_command("ingest_spectra", "--stale", "--no-rv-measurement", "--rv-catalog", str(catalog))
    out = capsys.readouterr().out
    assert f"older preprocessing: {n} spectra ({n} of version 1.0)" in out and f"spectra: {n} written" in out
    from spectra.processing.pipeline import PREPROCESSING_VERSION

    assert set(of_file.values_list("preprocessing_version", "status", "rv_blue")) == {
        (PREPROCESSING_VERSION, "preprocessed", -50.0)}


def test_ingest_stale_reads_every_copy_and_spectra_from_before_copies_were_kept(tmp_path, settings, capsys):
    import gzip

    from spectra.processing.pipeline import PREPROCESSING_VERSION
    from spectra.services.ingest import spectra_stale_batches

    settings.SPECTRA_ARRAY_ROOT = tmp_path / "arrays"
    plain, packed = tmp_path / "a" / CLEAN, tmp_path / "b" / f"{CLEAN}.gz"
    plain.parent.mkdir()
    packed.parent.mkdir()
    shutil.copy(real_file(CLEAN), plain)
    packed.write_bytes(gzip.compress(plain.read_bytes()))  # the same spectra, another file
    catalog = rv_catalog_for([plain])
    spectra_ingest(paths=[plain, packed], rv_catalog=catalog)
    assert set(Spectrum.objects.values_list("source_path", flat=True)) == {str(plain)}
    _as_if_made_by(Spectrum.objects.all(), "1.0")
    # The file they are stored from is gone; the other copy, as good, takes their place.
    plain.unlink()
    call_command("ingest_spectra", "--stale", "--no-rv-measurement")
    assert "files: 2 seen, 1 ingested, 0 unchanged, 1 failed" in capsys.readouterr().out
    assert set(Spectrum.objects.values_list("source_path", "preprocessing_version", "rv_blue")) == {
        (str(packed), PREPROCESSING_VERSION, -20.0)}
    # Spectra from before copies were recorded: found by the path stored with them.
    SpectrumCopy.objects.all().delete()
    SourceFile.objects.all().delete()
    _as_if_made_by(Spectrum.objects.all(), "1.0")
    batches = list(spectra_stale_batches())
    assert [b.paths for b in batches] == [[str(packed)]]
    assert set(batches[0].rv_catalog.values()) == {(-20.0, -18.0)}
    call_command("ingest_spectra", "--stale", "--no-rv-measurement")
    assert set(Spectrum.objects.values_list("preprocessing_version", flat=True)) == {PREPROCESSING_VERSION}
    assert SpectrumCopy.objects.count() == Spectrum.objects.count() == 8
    assert list(spectra_stale_batches()) == []


def test_a_coadds_catalog_rv_is_not_reused_for_exposures_that_measured_theirs(survey_dir, settings, tmp_path):
    from spectra.services.ingest import spectra_stale_batches

    settings.SPECTRA_ARRAY_ROOT = tmp_path / "arrays"
    root, files = survey_dir
    spectra_ingest(paths=[root], rv_catalog=rv_catalog_for(files))
    coadd = Spectrum.objects.get(medres_specid="20181016-TD230151N343645T01-01-015-coadd-DR7")
    _as_if_made_by(Spectrum.objects.all(), "1.0")
    exposure = Spectrum.objects.filter(obsid=coadd.obsid, kind="exposure").order_by("id").first()
    Spectrum.objects.filter(pk=exposure.pk).update(rv_source=Spectrum.RVSource.MEASURED, rv_blue=3.0, rv_red=4.0)
    catalog = {}
    for batch in spectra_stale_batches(batch_files=2):
        catalog.update(batch.rv_catalog)
    assert (coadd.obsid, None) not in catalog and (coadd.obsid, exposure.lmjm) not in catalog
    others = Spectrum.objects.filter(obsid=coadd.obsid, kind="exposure").exclude(pk=exposure.pk)
    assert all(catalog[(coadd.obsid, e.lmjm)] == (-20.0, -18.0) for e in others)
    other_coadds = Spectrum.objects.filter(kind="coadd", status="preprocessed").exclude(obsid=coadd.obsid)
    assert other_coadds.exists() and all(catalog[(c.obsid, None)] == (-20.0, -18.0) for c in other_coadds)


def test_ingest_command_prints_a_summary(survey_dir, settings, tmp_path, capsys):
    settings.SPECTRA_ARRAY_ROOT = tmp_path / "arrays"
    root, files = survey_dir
    catalog = tmp_path / "rv.csv"
    from spectra.io import read_spectrum_file

    lines = ["obsid,rv_blue,rv_red,lmjm"] + [f"{read_spectrum_file(p).obsid},-5.0,-4.0," for p in files]
    catalog.write_text("\n".join(lines) + "\n")
    listing = tmp_path / "list.txt"
    listing.write_text("\n".join(str(p) for p in sorted(root.rglob("*.fits*"))))
    call_command("ingest_spectra", "--list", str(listing), "--rv-catalog", str(catalog), "--no-rv-measurement")
    out = capsys.readouterr().out
    assert f"files: {len(files) + 3} seen, {len(files)} ingested" in out
    assert "failed (corrupt): 1" in out and "preprocessed:" in out
    assert Spectrum.objects.filter(rv_source="catalog", rv_blue=-5.0).count() == Spectrum.objects.count()


def test_ingest_command_refuses_a_malformed_rv_catalog(tmp_path):
    from django.core.management.base import CommandError

    catalog = tmp_path / "rv.csv"
    catalog.write_text("obsid,rv_blue\n1,2\n")
    with pytest.raises(CommandError, match="missing column"):
        call_command("ingest_spectra", str(tmp_path), "--rv-catalog", str(catalog), "--no-rv-measurement")
    catalog.write_text("obsid,rv_blue,rv_red\n1,nan,2\n")
    with pytest.raises(CommandError, match="non-finite"):
        call_command("ingest_spectra", str(tmp_path), "--rv-catalog", str(catalog), "--no-rv-measurement")


def test_measured_rvs_when_no_catalog_is_given(survey_dir, settings, tmp_path):
    from spectra.processing.spectrum_model import SpectrumModelError
    from spectra.spectrum_model_files import rv_templates_load

    try:
        templates = rv_templates_load()
    except SpectrumModelError as error:
        pytest.skip(f"spectrum model not available: {error}")
    settings.SPECTRA_ARRAY_ROOT = tmp_path / "arrays"
    root, _ = survey_dir
    spectra_ingest(paths=[root], templates=templates)
    coadd = Spectrum.objects.get(medres_specid="20181016-TD230151N343645T01-01-015-coadd-DR7")
    assert coadd.rv_source == "measured" and "RV_MEASURED" in coadd.flag_names
    assert -60 < coadd.rv_blue < -45 and coadd.rv_blue_err < 1.0 and abs(coadd.rv_red - coadd.rv_blue) < 10
    assert SPECTRUM_FLAGS["RV_UNRELIABLE"].name not in coadd.flag_names


def test_admin_shows_the_spectrum_figure_and_the_failed_files(survey_dir, settings, tmp_path, curator):
    from django.test import Client

    settings.SPECTRA_ARRAY_ROOT = tmp_path / "arrays"
    root, files = survey_dir
    spectra_ingest(paths=[root], rv_catalog=rv_catalog_for(files))
    client = Client()
    client.force_login(curator)
    coadd = Spectrum.objects.get(medres_specid="20181016-TD230151N343645T01-01-015-coadd-DR7")
    page = client.get(f"/admin/spectra/spectrum/{coadd.pk}/change/").content.decode()
    assert f"/admin/spectra/spectrum/{coadd.pk}/figure.png" in page
    image = client.get(f"/admin/spectra/spectrum/{coadd.pk}/figure.png")
    assert image.status_code == 200 and image["Content-Type"] == "image/png" and image.content[:4] == b"\x89PNG"
    assert Client().get(f"/admin/spectra/spectrum/{coadd.pk}/figure.png").status_code == 302  # login required
    failed = client.get("/admin/spectra/sourcefile/", {"status__exact": "failed"}).content.decode()
    assert "truncated.fits.gz" in failed and "readme.fits" in failed
    # The figure shows the stored arrays (what the networks read), not a new reading of the file.
    (root / "night0" / files[0].name).unlink()
    moved = Spectrum.objects.filter(source_path__endswith=f"night0/{files[0].name}", array_shard__gt="").first()
    assert client.get(f"/admin/spectra/spectrum/{moved.pk}/figure.png").status_code == 200
    ArrayStore(settings.SPECTRA_ARRAY_ROOT).path(moved.array_shard).unlink()
    gone = client.get(f"/admin/spectra/spectrum/{moved.pk}/figure.png")
    assert gone.status_code == 404 and moved.array_shard in gone.json()["detail"]


def test_the_same_observation_twice_in_a_batch_is_one_row(tmp_path, settings):
    import gzip

    settings.SPECTRA_ARRAY_ROOT = tmp_path / "arrays"
    source = next(p for p in real_files() if p.name.endswith(".gz") and p.name not in JUNK_FILES)
    (tmp_path / "both").mkdir()
    shutil.copy(source, tmp_path / "both" / source.name)
    (tmp_path / "both" / source.name[: -len(".gz")]).write_bytes(gzip.decompress(source.read_bytes()))
    from spectra.io import read_spectrum_file

    catalog = {(read_spectrum_file(source).obsid, None): (0.0, 0.0)}
    summary = spectra_ingest(paths=[tmp_path / "both"], rv_catalog=catalog)
    assert summary.files_ingested == 2 and not summary.failures
    assert Spectrum.objects.count() == len(read_spectrum_file(source).spectra)


def test_a_file_that_breaks_preprocessing_fails_alone(survey_dir, settings, tmp_path, monkeypatch):
    import spectra.services.ingest

    settings.SPECTRA_ARRAY_ROOT = tmp_path / "arrays"
    root, files = survey_dir
    poisoned = files[0].name
    real_preprocess = spectra.services.ingest.preprocess

    def preprocess_that_breaks_on_one_file(spectra_list, **kwargs):
        if any(s.blue is not None and s.blue.flux.size and getattr(s, "_poison", False) for s in spectra_list):
            raise FloatingPointError("synthetic failure")
        return real_preprocess(spectra_list, **kwargs)

    real_read = spectra.services.ingest.read_spectrum_file

    def read_marking_poison(path, data=None, **options):
        parsed = real_read(path, data, **options)
        if path.endswith(poisoned):
            for spectrum in parsed.spectra:
                spectrum._poison = True
        return parsed

    monkeypatch.setattr(spectra.services.ingest, "preprocess", preprocess_that_breaks_on_one_file)
    monkeypatch.setattr(spectra.services.ingest, "read_spectrum_file", read_marking_poison)
    summary = spectra_ingest(paths=[root], rv_catalog=rv_catalog_for(files), batch_files=50)
    assert summary.failures["preprocessing_failed"] == sum(1 for p in root.rglob(poisoned))
    assert summary.files_ingested == len(files) - 1
    failed = SourceFile.objects.get(error_kind="preprocessing_failed")
    assert poisoned in failed.path and "synthetic failure" in failed.error_message


CLEAN = "med-58408-TD230151N343645T01_sp01-015.fits"


def _clean_ingested(tmp_path, settings):
    settings.SPECTRA_ARRAY_ROOT = tmp_path / "arrays"
    good = tmp_path / "good" / CLEAN
    good.parent.mkdir()
    shutil.copy(real_file(CLEAN), good)
    catalog = rv_catalog_for([good])
    assert spectra_ingest(paths=[good], rv_catalog=catalog).files_ingested == 1
    assert Spectrum.objects.filter(status="preprocessed").count() == 8
    return good, catalog


def _state():
    return sorted(Spectrum.objects.values_list("medres_specid", "status", "source_path", "source_sha256", "array_shard", "array_row"))


@pytest.mark.parametrize("cut", [584_640, 141_120])
def test_a_truncated_copy_is_recorded_and_never_replaces_the_good_spectra(tmp_path, settings, cut):
    good, catalog = _clean_ingested(tmp_path, settings)
    before = _state()
    truncated = tmp_path / "mirror" / CLEAN
    truncated.parent.mkdir()
    truncated.write_bytes(good.read_bytes()[:cut])
    summary = spectra_ingest(paths=[truncated], rv_catalog=catalog)
    assert dict(summary.failures) == {"truncated": 1} and summary.spectra_written == 0
    record = SourceFile.objects.get(path=str(truncated))
    assert (record.status, record.error_kind) == ("failed", "truncated")
    assert "declares 7" in record.error_message
    assert _state() == before
    assert set(Spectrum.objects.values_list("source_path", flat=True)) == {str(good)}
    # Re-ingesting the good file is still a no-op.
    assert spectra_ingest(paths=[good], rv_catalog=catalog).files_unchanged == 1


def _worse_copy(good, path):
    """The same observation with every exposure's red arm lost: a readable, worse copy."""
    from spectra.io import read_spectrum_file
    from spectra.io.lamost_writer import write_lamost_mrs

    parsed = read_spectrum_file(good)
    for spectrum in parsed.spectra:
        if spectrum.kind == "exposure":
            spectrum.red = None
    return write_lamost_mrs(parsed, path)


def test_a_worse_copy_is_kept_as_provenance_only(tmp_path, settings, curator):
    good, catalog = _clean_ingested(tmp_path, settings)
    before = _state()
    worse = _worse_copy(good, tmp_path / "mirror" / "copy-of-015.fits")
    summary = spectra_ingest(paths=[worse], rv_catalog=catalog)
    assert summary.files_ingested == 1 and summary.spectra_written == 0 and summary.copies_not_used == 8
    assert _state() == before
    copies = SpectrumCopy.objects.filter(source_file__path=str(worse))
    assert copies.count() == 8
    assert copies.filter(status="failed").count() == 7  # the exposures without a red arm
    assert SpectrumCopy.objects.filter(source_file__path=str(good), status="preprocessed").count() == 8
    # The spectrum's admin page lists both copies.
    from django.test import Client

    client = Client()
    client.force_login(curator)
    exposure = Spectrum.objects.filter(kind="exposure").first()
    page = client.get(f"/admin/spectra/spectrum/{exposure.pk}/change/").content.decode()
    assert "copies in source files" in page.lower() and page.count(str(good)) >= 2 and str(worse) in page
    # Both files are now unchanged on a re-run.
    again = spectra_ingest(paths=[good, worse], rv_catalog=catalog)
    assert again.files_unchanged == 2 and again.spectra_written == 0


def test_a_better_copy_replaces_a_worse_one_and_the_good_file_repairs_old_damage(tmp_path, settings):
    settings.SPECTRA_ARRAY_ROOT = tmp_path / "arrays"
    good = tmp_path / "good" / CLEAN
    good.parent.mkdir()
    shutil.copy(real_file(CLEAN), good)
    catalog = rv_catalog_for([good])
    worse = _worse_copy(good, tmp_path / "mirror" / "copy-of-015.fits")
    spectra_ingest(paths=[worse], rv_catalog=catalog)
    assert Spectrum.objects.filter(kind="exposure", status="failed").count() == 7
    spectra_ingest(paths=[good], rv_catalog=catalog)
    assert Spectrum.objects.filter(status="preprocessed").count() == 8
    assert set(Spectrum.objects.filter(kind="exposure").values_list("source_path", flat=True)) == {str(good)}
    # The coadd is the same in both copies: the first one stored stays.
    assert Spectrum.objects.get(kind="coadd").source_path == str(worse)
    repaired = _state()
    # A database damaged before copies were recorded: exposures point at the worse copy,
    # and only the copies the rows name are known (what the migration backfills).
    worse_sha = SourceFile.objects.get(path=str(worse)).sha256
    Spectrum.objects.filter(kind="exposure").update(status="failed", source_path=str(worse), source_sha256=worse_sha)
    SpectrumCopy.objects.filter(source_file__path=str(good), spectrum__kind="exposure").delete()
    summary = spectra_ingest(paths=[good], rv_catalog=catalog)
    assert summary.files_unchanged == 0 and summary.spectra_written == 7
    assert [row[:4] for row in _state()] == [row[:4] for row in repaired]
    assert Spectrum.objects.filter(status="preprocessed").count() == 8


def test_a_gzip_bomb_is_recorded_as_corrupt_and_the_rest_goes_on(tmp_path, settings):
    import gzip

    settings.SPECTRA_ARRAY_ROOT = tmp_path / "arrays"
    root = tmp_path / "survey"
    root.mkdir()
    shutil.copy(real_file(CLEAN), root / CLEAN)
    member = gzip.compress(bytes(16 * 2**20), compresslevel=9)
    (root / "bomb.fits.gz").write_bytes(member * 128)  # 2 MB that inflate to 2 GiB
    summary = spectra_ingest(paths=[root], rv_catalog=rv_catalog_for([root / CLEAN]))
    assert summary.files_ingested == 1 and dict(summary.failures) == {"corrupt": 1}
    bomb = SourceFile.objects.get(path=str(root / "bomb.fits.gz"))
    assert bomb.error_kind == "corrupt" and f"inflate to more than {settings.SPECTRUM_FILE_MAX_BYTES} bytes" in bomb.error_message


@pytest.fixture
def small_filesystem(tmp_path):
    """A 1.2 MB tmpfs (room for two files' shards); skipped where mounting is not allowed."""
    import subprocess

    mount_point = tmp_path / "small-fs"
    mount_point.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1200k", "tmpfs", str(mount_point)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({mounted.stderr.decode().strip() or 'not root'})")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", str(mount_point)], check=False)


def test_a_full_array_store_stops_the_ingest_without_blaming_the_files(tmp_path, settings, small_filesystem):
    from spectra.array_store import ArrayStoreError

    settings.SPECTRA_ARRAY_ROOT = small_filesystem / "arrays"
    good = [p for p in real_files() if p.name not in JUNK_FILES][:5]
    catalog = rv_catalog_for(good)
    with pytest.raises(ArrayStoreError, match=r"No space left on device \(errno 28\)"):
        spectra_ingest(paths=good, rv_catalog=catalog, batch_files=1)
    assert not SourceFile.objects.filter(status="failed").exists()
    written = SourceFile.objects.filter(status="ingested").count()
    assert 1 <= written < len(good)
    assert Spectrum.objects.count() == SpectrumCopy.objects.count() > 0
    store = ArrayStore(settings.SPECTRA_ARRAY_ROOT)
    assert all(store.path(shard).exists() for shard in Spectrum.objects.exclude(array_shard="").values_list("array_shard", flat=True))
    assert not [p.name for p in small_filesystem.rglob("*") if ".tmp-" in p.name]
    # With room again, a re-run goes on from there.
    import subprocess

    subprocess.run(["mount", "-o", "remount,size=20m", str(small_filesystem)], check=True)
    summary = spectra_ingest(paths=good, rv_catalog=catalog, batch_files=1)
    assert summary.files_unchanged == written and summary.files_ingested == len(good) - written
    assert SourceFile.objects.filter(status="ingested").count() == len(good)


KIC_FILES = (  # one star: three nights of one plan, another plan, and an earlier night
    "med-58625-TD192102N424113K01_sp12-076.fits.gz",
    "med-58644-TD192102N424113K01_sp12-076.fits.gz",
    "med-58646-TD192102N424113K01_sp12-076.fits.gz",
    "med-58649-TD193637N444141K01_sp10-159.fits.gz",
)


@pytest.mark.django_db(transaction=True)
def test_two_concurrent_ingests_of_one_star_make_one_star(tmp_path, settings, monkeypatch):
    import threading

    from django.db import connection

    import spectra.services.ingest

    settings.SPECTRA_ARRAY_ROOT = tmp_path / "arrays"
    files = [real_file(name) for name in KIC_FILES]
    catalog = rv_catalog_for(files)
    # Both ingests reach star matching at the same moment: without a lock each finds no
    # star and creates one.
    barrier = threading.Barrier(2, timeout=30)
    real_stars_for_files = spectra.services.ingest.stars_for_files

    def stars_after_the_barrier(batch_files):
        barrier.wait()
        return real_stars_for_files(batch_files)

    monkeypatch.setattr(spectra.services.ingest, "stars_for_files", stars_after_the_barrier)
    errors = []

    def ingest(paths):
        try:
            spectra_ingest(paths=paths, rv_catalog=catalog, batch_files=len(paths))
        except Exception as error:  # noqa: BLE001  (reported by the assertion below)
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=ingest, args=(files[:2],)), threading.Thread(target=ingest, args=(files[2:],))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors
    assert Star.objects.count() == 1
    assert Spectrum.objects.values("star_id").distinct().count() == 1
    from spectra.io import read_spectrum_file

    assert Spectrum.objects.count() == sum(len(read_spectrum_file(p).spectra) for p in files)


def test_merge_duplicate_stars_repairs_a_catalog(tmp_path, settings):
    from spectra.services.star_identity import sky_cells

    settings.SPECTRA_ARRAY_ROOT = tmp_path / "arrays"
    files = [real_file(name) for name in KIC_FILES]
    spectra_ingest(paths=files, rv_catalog=rv_catalog_for(files))
    star = Star.objects.get()
    # What concurrent ingests did before stars were locked: the same object twice.
    twin = Star.objects.create(designation=star.designation, ra=star.ra + 0.3 / 3600, dec=star.dec, gaia_source_id=None)
    moved = list(Spectrum.objects.filter(plan_id="TD193637N444141K01").values_list("pk", flat=True))
    Spectrum.objects.filter(pk__in=moved).update(star=twin)
    far = Star.objects.create(designation="LAMOST J000000.00+000000.0", ra=star.ra + 5 / 3600, dec=star.dec)
    out = tmp_path / "out.txt"
    with out.open("w") as handle:
        call_command("merge_duplicate_stars", "--dry-run", stdout=handle)
    assert f"would merge 1 duplicate stars into 1 ({len(moved)} spectra to move" in out.read_text()
    assert Star.objects.count() == 3
    call_command("merge_duplicate_stars")
    assert sorted(Star.objects.values_list("pk", flat=True)) == sorted([star.pk, far.pk])
    assert set(Spectrum.objects.values_list("star_id", flat=True)) == {star.pk}
    # Lock cells: a position on a cell edge locks both neighbours (RA wraps at 360), sorted.
    cells = sky_cells(np.array([10.0, 359.9999]), np.array([0.0, 45.0]), 1.5 / 3600)
    assert cells.tolist() == [89 * 360 + 9, 89 * 360 + 10, 90 * 360 + 9, 90 * 360 + 10,
                              134 * 360 + 0, 134 * 360 + 359, 135 * 360 + 0, 135 * 360 + 359]
