import pytest
from django.test import Client

from core.flags import SPECTRUM_FLAGS
from inference.models import CatalogEntry
from spectra.models import CurationRecord, Spectrum

from .conftest import label_rows, make_spectra

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client(curator):
    client = Client()
    client.force_login(curator)
    return client


def test_admin_requires_login(db):
    response = Client().get("/admin/spectra/spectrum/")
    assert response.status_code == 302 and "/admin/login/" in response["Location"]


@pytest.mark.parametrize(
    "url",
    [
        "/admin/spectra/star/?q=LAMOST",
        "/admin/spectra/star/?q=not-a-number",
        "/admin/spectra/spectrum/?q=1001",
        "/admin/spectra/spectrum/?flags_bit=LOW_SNR_RED&snr=30-50",
        "/admin/spectra/spectrum/?flags_bit=clean",
        "/admin/inference/catalogentry/?flag__exact=1&flag_bits_bit=MODELS_DISAGREE_TEFF",
        "/admin/inference/catalogentry/?q=LAMOST",
        "/admin/inference/labelset/",
        "/admin/inference/modelversion/",
        "/admin/inference/catalogrelease/",
        "/admin/spectra/curationrecord/",
    ],
)
def test_admin_lists_search_and_filter(admin_client, release_factory, url):
    spectra = make_spectra([(10.0, 10.0), (11.0, 11.0)])
    release_factory(spectra, label_rows([4800.0, 5000.0]), label_rows([4800.0, 5300.0]))
    response = admin_client.get(url)
    assert response.status_code == 200


def test_admin_list_pages_do_not_query_per_row(admin_client, release_factory, django_assert_max_num_queries):
    spectra = make_spectra([(float(i), 1.0) for i in range(30)])
    release_factory(spectra, label_rows([5000.0] * 30), label_rows([5000.0] * 30))
    for url in ("/admin/spectra/spectrum/", "/admin/inference/catalogentry/", "/admin/inference/labelset/"):
        with django_assert_max_num_queries(12):
            assert admin_client.get(url).status_code == 200


def test_entry_search_finds_by_designation(admin_client, release_factory):
    spectra = make_spectra([(10.0, 10.0), (11.0, 11.0)])
    release_factory(spectra, label_rows([4800.0, 5000.0]), label_rows([4800.0, 5000.0]))
    page = admin_client.get("/admin/inference/catalogentry/", {"q": spectra[1].star.designation}).content.decode()
    assert spectra[1].medres_specid in page and spectra[0].medres_specid not in page


def test_flag_action_needs_a_reason_and_records_who(admin_client, curator):
    spectra = make_spectra([(10.0, 10.0), (11.0, 11.0)])
    ids = [str(s.pk) for s in spectra]
    admin_client.post("/admin/spectra/spectrum/", {"action": "flag_bad", "_selected_action": ids, "reason": ""})
    assert not Spectrum.objects.filter(flags__gt=0).exists() and not CurationRecord.objects.exists()
    admin_client.post("/admin/spectra/spectrum/", {"action": "flag_bad", "_selected_action": ids, "reason": "fibre crosstalk"})
    assert all(SPECTRUM_FLAGS.names(s.flags) == ["CURATOR_FLAGGED"] for s in Spectrum.objects.all())
    records = CurationRecord.objects.all()
    assert {(r.user_id, r.reason, r.action) for r in records} == {(curator.pk, "fibre crosstalk", "flag")}
    admin_client.post("/admin/spectra/spectrum/", {"action": "unflag", "_selected_action": ids[:1], "reason": "checked"})
    assert sorted(s.flags for s in Spectrum.objects.all()) == [0, SPECTRUM_FLAGS.mask("CURATOR_FLAGGED")]


def test_flag_action_on_published_entries_is_refused(admin_client, release_factory):
    spectra = make_spectra([(10.0, 10.0)])
    release_factory(spectra, label_rows([4800.0]), label_rows([4800.0]))
    entry = CatalogEntry.objects.get()
    response = admin_client.post(
        "/admin/inference/catalogentry/",
        {"action": "flag_bad", "_selected_action": [str(entry.pk)], "reason": "x"},
        follow=True,
    )
    assert "cannot change" in response.content.decode()
    entry.refresh_from_db()
    assert entry.flag == 1 and entry.flag_bits == 0


def test_admin_can_open_a_spectrum_and_entry_page(admin_client, release_factory):
    spectra = make_spectra([(10.0, 10.0)])
    release_factory(spectra, label_rows([4800.0]), label_rows([4800.0]))
    assert admin_client.get(f"/admin/spectra/spectrum/{spectra[0].pk}/change/").status_code == 200
    assert admin_client.get(f"/admin/inference/catalogentry/{CatalogEntry.objects.get().pk}/change/").status_code == 200


def test_adding_a_release_in_the_admin_checks_roles_and_records_rules(admin_client, curator):
    from inference.models import CatalogRelease, ModelVersion

    from .conftest import make_model

    formal, alternate = make_model(ModelVersion.Role.FORMAL), make_model(ModelVersion.Role.ALTERNATE)
    form = {"name": "dr7-v1", "description": "", "formal_model": alternate.pk, "alternate_model": formal.pk}
    response = admin_client.post("/admin/inference/catalogrelease/add/", form)
    assert response.status_code == 200 and "model roles must be formal and alternate" in response.content.decode()
    assert not CatalogRelease.objects.exists()
    admin_client.post("/admin/inference/catalogrelease/add/", {**form, "formal_model": formal.pk, "alternate_model": alternate.pk})
    release = CatalogRelease.objects.get()
    assert release.created_by == curator and release.rules["max_delta_teff"] == 120.0


def test_adding_a_run_in_the_admin_goes_through_its_service(admin_client, curator, settings):
    from inference.models import ModelVersion
    from tasks.models import ProcessingRun

    from .conftest import make_model

    formal, alternate = make_model(ModelVersion.Role.FORMAL), make_model(ModelVersion.Role.ALTERNATE)
    form = {"name": "night", "stages": '["release", "predict"]', "paths": "[]", "rv_catalog_path": "",
            "measure_rv": "on", "formal_model": formal.pk, "alternate_model": alternate.pk, "release_name": "",
            "chunk_files": 256, "chunk_spectra": 4096}
    refused = admin_client.post("/admin/tasks/processingrun/add/", form)
    assert refused.status_code == 200 and "a release stage needs a release name" in refused.content.decode()
    assert not ProcessingRun.objects.exists()
    admin_client.post("/admin/tasks/processingrun/add/", {**form, "release_name": "r-night"})
    run = ProcessingRun.objects.get()
    # The service's normalisation: the pipeline's stage order, whoever made it.
    assert run.stages == ["predict", "release"] and run.created_by == curator and run.state == "pending"
    page = admin_client.get(f"/admin/tasks/processingrun/{run.pk}/change/").content.decode()
    assert 'name="stages"' not in page  # the configuration is fixed once the run exists


def test_saving_an_existing_run_in_the_admin_changes_nothing(admin_client, curator):
    from inference.models import ModelVersion
    from tasks.models import ProcessingRun
    from tasks.services import processing_run_create

    from .conftest import make_model

    formal, alternate = make_model(ModelVersion.Role.FORMAL), make_model(ModelVersion.Role.ALTERNATE)
    run = processing_run_create(stages=["predict"], formal_model=formal, alternate_model=alternate, name="kept")
    response = admin_client.post(f"/admin/tasks/processingrun/{run.pk}/change/", {"name": "other", "_save": "Save"})
    assert response.status_code == 302
    assert ProcessingRun.objects.count() == 1 and ProcessingRun.objects.get().name == "kept"
