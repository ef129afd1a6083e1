import copy
import gzip
import re
import shutil

import numpy as np
import pytest

from spectra.io import (
    ArmProblem,
    CorruptFileError,
    NotFitsError,
    TruncatedFileError,
    UnknownFormatError,
    read_spectrum_file,
    registered_readers,
)
from spectra.io.lamost_writer import write_lamost_mrs
from spectra.processing.grids import WINDOWS

from .shared_data import JUNK_FILES, real_file, real_files

CLEAN = "med-58408-TD230151N343645T01_sp01-015.fits"
GZIPPED = "med-58025-HIP9645901_sp02-051.fits.gz"


def test_both_layouts_are_registered():
    assert {"lamost-mrs-dr7", "lamost-mrs-dr9v1"} <= set(registered_readers())


@pytest.mark.parametrize("index", range(9))
def test_every_real_file_reads_with_coadd_and_exposures(index):
    files = real_files()
    if index >= len(files):
        pytest.skip("fewer real files than expected")
    from astropy.io import fits

    path = files[index]
    spectrum_file = read_spectrum_file(path)
    with fits.open(path) as hdul:
        header = hdul[0].header
        exposures = {h.name.split("-")[1] for h in hdul[1:] if h.name[:2] in ("B-", "R-")}
    assert spectrum_file.designation == header["DESIG"] and spectrum_file.plan_id == header["PLANID"]
    assert (spectrum_file.lmjd, spectrum_file.spectrograph, spectrum_file.fiber) == (header["LMJD"], header["SPID"], header["FIBERID"])
    assert spectrum_file.format == "lamost-mrs-dr7" and spectrum_file.vacuum
    kinds = [s.kind for s in spectrum_file.spectra]
    assert kinds == ["coadd"] + ["exposure"] * len(exposures)
    assert sorted(str(s.lmjm) for s in spectrum_file.spectra[1:]) == sorted(exposures)
    for spectrum in spectrum_file.spectra:
        for name in ("blue", "red"):
            arm = spectrum.arm(name)
            # (Coadds with unmasked pixels of flux exactly 0 and IVAR kept say so: the test below.)
            assert arm is not None and set(spectrum.problems[name]) <= {ArmProblem.ZERO_FLUX}
            assert spectrum.kind == "coadd" or spectrum.problems[name] == []
            assert np.all(np.diff(arm.wavelength) > 0), "every arm is returned in increasing wavelength"
            low, high = WINDOWS[name]
            assert arm.wavelength[0] < low and arm.wavelength[-1] > high
            assert arm.flux.dtype == np.float32 and arm.ivar.dtype == np.float32


def test_red_exposures_stored_in_decreasing_order_come_back_increasing():
    path = real_file(CLEAN)
    from astropy.io import fits

    with fits.open(path) as hdul:
        table = hdul["R-84107311"].data
        stored_wave = 10 ** table["LOGLAM"].astype(float)
        stored_flux = table["FLUX"]
    assert stored_wave[0] > stored_wave[-1]
    red = read_spectrum_file(path).spectra[1].red
    np.testing.assert_allclose(red.wavelength, stored_wave[::-1], rtol=1e-12)
    np.testing.assert_array_equal(red.flux, stored_flux[::-1])


def test_coadd_zero_tails_are_unusable_pixels():
    coadd = read_spectrum_file(real_file(CLEAN)).spectra[0]
    for arm in (coadd.blue, coadd.red):
        tail = arm.flux[-5:]
        assert np.all(tail == 0) and not arm.usable[-5:].any()


def test_zero_flux_with_its_ivar_kept_is_masked_and_recorded_where_no_mask_bit_marks_it(tmp_path):
    # A real coadd with a block of flux exactly 0, IVAR kept and no ORMASK bit.
    coadd = read_spectrum_file(real_file("med-58270-HIP95119KP01_sp12-076.fits.gz")).spectra[0]
    zero = coadd.blue.flux == 0
    block = zero & (coadd.blue.mask == 0) & (np.arange(zero.size) < zero.size // 2)  # (not the red-end tail)
    assert block.sum() == 5 and np.all(coadd.blue.ivar[block] == 0) and not coadd.blue.usable[block].any()
    assert coadd.problems["blue"] == [ArmProblem.ZERO_FLUX] and coadd.problems["red"] == []
    # One whose zero block carries ORMASK bits: masked already, nothing to record.
    clean = read_spectrum_file(real_file(CLEAN)).spectra[0]
    assert np.all(clean.blue.ivar[clean.blue.flux == 0] == 0) and clean.problems["blue"] == []

    def zero_block(sf):
        sf.spectra[2].blue.flux[300:306] = 0.0  # an exposure, its ivar and mask as they were

    again = _edited(tmp_path, zero_block)
    arm = again.spectra[2].blue
    assert np.all(arm.ivar[300:306] == 0) and arm.usable[306:310].all()
    assert again.spectra[2].problems["blue"] == [ArmProblem.ZERO_FLUX] and again.spectra[1].problems["blue"] == []


def test_plain_and_gzipped_files_read_the_same(tmp_path):
    source = real_file(GZIPPED)
    plain = tmp_path / "plain.fits"
    plain.write_bytes(gzip.decompress(source.read_bytes()))
    a, b = read_spectrum_file(source), read_spectrum_file(plain)
    assert len(a.spectra) == len(b.spectra)
    for x, y in zip(a.spectra, b.spectra, strict=True):
        np.testing.assert_array_equal(x.blue.flux, y.blue.flux)
        np.testing.assert_array_equal(x.red.wavelength, y.red.wavelength)


@pytest.mark.parametrize(("layout", "name"), [("dr9v1", "dr9v1.fits.gz"), ("dr7", "dr7-again.fits")])
def test_files_written_from_real_data_read_back_identically(tmp_path, layout, name):
    original = read_spectrum_file(real_file(CLEAN))
    written = write_lamost_mrs(original, tmp_path / name, layout=layout)
    again = read_spectrum_file(written)
    assert again.format == f"lamost-mrs-{layout}" and again.layout_version == layout
    assert (again.designation, again.obsid, again.lmjd) == (original.designation, original.obsid, original.lmjd)
    assert [s.lmjm for s in again.spectra] == [s.lmjm for s in original.spectra]
    for x, y in zip(original.spectra, again.spectra, strict=True):
        for arm in ("blue", "red"):
            np.testing.assert_array_equal(x.arm(arm).flux, y.arm(arm).flux)
            np.testing.assert_array_equal(x.arm(arm).mask, y.arm(arm).mask)
            np.testing.assert_allclose(x.arm(arm).wavelength, y.arm(arm).wavelength, rtol=1e-7)


def test_truncated_gzip_names_the_file(tmp_path):
    broken = tmp_path / "truncated.fits.gz"
    broken.write_bytes(real_file(GZIPPED).read_bytes()[:50_000])
    with pytest.raises(CorruptFileError, match="truncated.fits.gz: truncated gzip"):
        read_spectrum_file(broken)


def test_gzip_whose_checksum_does_not_match_its_data_is_corrupt(tmp_path):
    # A stored (uncompressed) gzip block: a flipped bit inflates without complaint, and
    # only the member's CRC-32 tells.
    data = bytearray(gzip.compress(b"SIMPLE  =" + b" " * 5751, compresslevel=0))
    data[100] ^= 0x01
    flipped = tmp_path / "flipped.fits.gz"
    flipped.write_bytes(bytes(data))
    with pytest.raises(CorruptFileError, match="flipped.fits.gz: corrupt gzip data"):
        read_spectrum_file(flipped)


def test_corrupt_gzip_and_not_fits(tmp_path):
    data = bytearray(real_file(GZIPPED).read_bytes())
    data[2000:2100] = bytes(100)
    corrupt = tmp_path / "corrupt.fits.gz"
    corrupt.write_bytes(bytes(data))
    with pytest.raises(CorruptFileError, match="corrupt.fits.gz"):
        read_spectrum_file(corrupt)
    text = tmp_path / "notes.fits"
    text.write_text("this is not a FITS file\n" * 200)
    with pytest.raises(NotFitsError, match="notes.fits: not a FITS file"):
        read_spectrum_file(text)


def test_fits_cut_short_in_the_data(tmp_path):
    plain = gzip.decompress(real_file(GZIPPED).read_bytes())
    cut = tmp_path / "cut.fits"
    cut.write_bytes(plain[: len(plain) // 2])
    with pytest.raises(CorruptFileError, match="cut.fits"):
        read_spectrum_file(cut)


@pytest.mark.parametrize(
    ("cut", "missing"),
    [(584_640, "7 R exposure tables (NEXP_R) but the file holds 0"), (141_120, "7 B exposure tables (NEXP_B) but the file holds 0")],
)
def test_a_copy_cut_at_an_hdu_boundary_is_truncated(tmp_path, cut, missing):
    # Both cuts end exactly between HDUs (584,640 = 203 FITS blocks: 10 of 17 HDUs; 141,120: 3),
    # so the FITS structure is whole; only the header's exposure counts show the loss.
    raw = real_file(CLEAN).read_bytes()
    cut_copy = tmp_path / "copy.fits"
    cut_copy.write_bytes(raw[:cut])
    with pytest.raises(TruncatedFileError, match=re.escape(f"copy.fits: the header declares {missing}")) as error:
        read_spectrum_file(cut_copy)
    assert error.value.kind == "truncated"
    gzipped = tmp_path / "copy.fits.gz"
    gzipped.write_bytes(gzip.compress(raw[:cut]))
    with pytest.raises(TruncatedFileError):
        read_spectrum_file(gzipped)


def test_a_copy_cut_after_the_primary_hdu_is_truncated_not_unknown(tmp_path):
    cut_copy = tmp_path / "primary-only.fits"
    cut_copy.write_bytes(real_file(CLEAN).read_bytes()[:8640])  # the primary header is 3 blocks
    with pytest.raises(TruncatedFileError, match="declares 7 B exposure tables"):
        read_spectrum_file(cut_copy)


def gzip_bomb(total_bytes: int, member_bytes: int = 16 * 2**20) -> bytes:
    """Concatenated gzip members of zeros: ~1000:1, built in a fraction of a second."""
    member = gzip.compress(bytes(member_bytes), compresslevel=9)
    return member * (total_bytes // member_bytes)


def test_a_gzip_bomb_is_refused_as_corrupt_in_bounded_memory(tmp_path):
    import tracemalloc

    bomb = tmp_path / "bomb.fits.gz"
    bomb.write_bytes(gzip_bomb(2 * 2**30))  # 2 GiB inflated, about 2 MB on disk
    assert bomb.stat().st_size < 3 * 2**20
    tracemalloc.start()
    try:
        with pytest.raises(CorruptFileError, match=r"bomb.fits.gz: gzip data inflate to more than 67108864 bytes"):
            read_spectrum_file(bomb)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 100 * 2**20, f"peak {peak / 2**20:.0f} MiB while refusing a gzip bomb"
    with pytest.raises(CorruptFileError, match="inflate to more than 4194304 bytes"):
        read_spectrum_file(bomb, max_bytes=4 * 2**20)


def test_multi_member_gzip_reads_like_one_member(tmp_path):
    plain = gzip.decompress(real_file(GZIPPED).read_bytes())
    split = tmp_path / "members.fits.gz"
    split.write_bytes(gzip.compress(plain[:100_000]) + gzip.compress(plain[100_000:]) + bytes(512))
    assert len(read_spectrum_file(split).spectra) == len(read_spectrum_file(real_file(GZIPPED)).spectra)


def test_a_file_larger_than_the_limit_is_not_read(tmp_path):
    big = tmp_path / "big.fits"
    big.write_bytes(real_file(CLEAN).read_bytes())
    with pytest.raises(CorruptFileError, match=r"big.fits: 1028160 bytes, more than the 1000000"):
        read_spectrum_file(big, max_bytes=1_000_000)


def test_fits_without_spectrum_tables_is_an_unknown_format(tmp_path):
    from astropy.io import fits

    path = tmp_path / "image.fits"
    fits.PrimaryHDU(np.zeros((4, 4))).writeto(path)
    with pytest.raises(UnknownFormatError, match="image.fits"):
        read_spectrum_file(path)


def _edited(tmp_path, edit, name="edited.fits"):
    spectrum_file = copy.deepcopy(read_spectrum_file(real_file(CLEAN)))
    edit(spectrum_file)
    return read_spectrum_file(write_lamost_mrs(spectrum_file, tmp_path / name))


def test_missing_arm_empty_table_nan_and_wrong_range_are_recorded_per_spectrum(tmp_path):
    def damage(sf):
        sf.spectra[1].red = None  # missing arm
        sf.spectra[2].blue.flux[100:110] = np.nan  # NaN flux
        sf.spectra[2].blue.ivar[200:205] = -1.0  # negative ivar
        red = sf.spectra[3].red
        red.wavelength = red.wavelength - 1500.0  # red arm data in the wrong window

    again = _edited(tmp_path, damage)
    assert again.spectra[1].red is None and again.spectra[1].problems["red"] == [ArmProblem.MISSING]
    nan_arm = again.spectra[2].blue
    assert ArmProblem.NONFINITE in again.spectra[2].problems["blue"]
    assert np.all(nan_arm.ivar[100:110] == 0) and np.all(nan_arm.ivar[200:205] == 0)
    assert np.all(np.isfinite(nan_arm.flux))
    assert ArmProblem.WAVELENGTH_RANGE in again.spectra[3].problems["red"]


def test_junk_files_read_without_error():
    medians = []
    for name in JUNK_FILES:
        spectrum_file = read_spectrum_file(real_file(name))
        for spectrum in spectrum_file.spectra:
            assert spectrum.blue.header_snr < 2 and spectrum.red.header_snr < 2
            medians.append(np.median(spectrum.blue.flux[spectrum.blue.usable]))
    assert min(medians) <= 0  # some of them have no positive signal at all


def test_reader_copies_are_independent_of_the_file_bytes(tmp_path):
    path = tmp_path / "copy.fits"
    shutil.copy(real_file(CLEAN), path)
    spectrum_file = read_spectrum_file(path)
    path.unlink()
    assert spectrum_file.spectra[0].blue.flux.sum() > 0


def test_header_parser_agrees_with_astropy_on_every_card_of_the_real_files():
    from astropy.io import fits

    from spectra.io.fitsbytes import open_fits_bytes

    for path in real_files():
        ours = open_fits_bytes(str(path), path.read_bytes())
        with fits.open(path) as hdul:
            assert len(hdul) == len(ours.hdus)
            for theirs, mine in zip(hdul, ours.hdus, strict=True):
                compared = 0
                for keyword in set(theirs.header.keys()) - {"COMMENT", "HISTORY", ""}:
                    expected = theirs.header[keyword]
                    assert mine.header[keyword] == expected, (path.name, keyword, mine.header[keyword], expected)
                    assert type(mine.header[keyword]) is type(expected), (path.name, keyword)
                    compared += 1
                assert compared > 5


@pytest.mark.parametrize("layout", ["dr7", "dr9v1"])
def test_written_files_are_valid_fits_for_astropy(tmp_path, layout):
    from astropy.io import fits

    original = read_spectrum_file(real_file(CLEAN))
    path = write_lamost_mrs(original, tmp_path / f"check-{layout}.fits.gz", layout=layout)
    with fits.open(path) as hdul:
        hdul.verify("exception")
        assert hdul[0].header["DESIG"] == original.designation and hdul[0].header["OBSID"] == original.obsid
        assert hdul[0].header["VACUUM"] is True and hdul[0].header["RA"] == original.ra
        red = hdul["R-84107311"]
        assert red.header["EXPTIME"] == 1200.0 and red.header["SNR"] == pytest.approx(93.38)
        expected = original.spectra[1].red
        if layout == "dr7":
            np.testing.assert_array_equal(red.data["FLUX"][::-1], expected.flux)
            assert red.data["LOGLAM"][0] > red.data["LOGLAM"][-1]
        else:
            np.testing.assert_array_equal(red.data["FLUX"][0], expected.flux)
            np.testing.assert_array_equal(red.data["WAVELENGTH"][0], expected.wavelength)
