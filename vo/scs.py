"""Simple Cone Search 1.03 over one published release (entries or star table).

``GET /vo/scs/<release>/?RA=&DEC=&SR=[&VERB=]`` (and ``/vo/scs/<release>/stars/``):
a VOTable with the rows within SR degrees of (RA, DEC), ICRS. VERB=1 gives the id and
position, 2 (the default) the principal columns, 3 every column. SR=0 answers the
table's metadata with no rows. Errors are VOTables with an ``Error`` INFO (SCS 1.03
section 3.3), HTTP 200 as the standard expects. The cone is the API's (core/sky.py).
"""

from itertools import islice

from django.http import HttpResponse, StreamingHttpResponse

from core.sky import apply_cone
from inference.columns import CATALOG_COLUMNS, STAR_COLUMNS
from inference.selectors import release_entries, release_stars, release_visible_by_name

from .conf import vo_setting
from .setup import PRINCIPAL
from .votable import VOTABLE_CONTENT_TYPE, Columns, ResultField, error_votable, results_votable_pieces

_BLOCK = 5_000

# The columns SCS 1.03 requires by their UCD1 (section 3.2.2): one id, RA and Dec.
_SCS_UCDS = {"ra": "POS_EQ_RA_MAIN", "dec": "POS_EQ_DEC_MAIN"}
TABLES = {
    # kind: (columns, the ID_MAIN column, the release's rows)
    "entries": (CATALOG_COLUMNS, "medres_specid", release_entries),
    "stars": (STAR_COLUMNS, "designation", release_stars),
}


def scs_columns(kind: str, verb: int):
    columns, id_name, _ = TABLES[kind]
    if verb == 1:
        wanted = {id_name, "ra", "dec"}
    elif verb == 2:
        wanted = PRINCIPAL | {id_name}
    else:
        wanted = {column.name for column in columns}
    return [column for column in columns if column.name in wanted]


def _error(message: str, status: int = 200) -> HttpResponse:
    return HttpResponse(error_votable(message, scs=True), content_type=VOTABLE_CONTENT_TYPE, status=status)


def _param(request, name: str) -> str | None:
    for key, value in request.GET.items():
        if key.upper() == name:
            return value
    return None


def _number(request, name: str) -> float:
    text = _param(request, name)
    if text is None or not text.strip():
        raise ValueError(f"{name} is required")
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{name} must be a number (got {text!r})") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError(f"{name} must be finite")
    return value


def cone_search(request, release_name: str, kind: str = "entries") -> HttpResponse:
    release = release_visible_by_name(user=request.user, name=release_name)
    if release is None:
        return _error(f"no published release named {release_name!r}", status=404)
    try:
        ra, dec, sr = (_number(request, name) for name in ("RA", "DEC", "SR"))
        verb_text = _param(request, "VERB")
        verb = 2 if verb_text in (None, "") else int(verb_text)
    except ValueError as error:
        message = str(error) if "VERB" not in str(error) and "invalid literal" not in str(error) else \
            "VERB must be 1, 2 or 3"
        return _error(message)
    if verb not in (1, 2, 3):
        return _error("VERB must be 1, 2 or 3")
    if not (-90.0 <= dec <= 90.0):
        return _error(f"DEC must be within [-90, 90] (got {dec:g})")
    if not (0.0 <= sr <= vo_setting("SCS_MAX_SR")):
        return _error(f"SR must be within [0, {vo_setting('SCS_MAX_SR'):g}] degrees (got {sr:g})")
    columns, id_name, rows_of = TABLES[kind]
    chosen = scs_columns(kind, verb)
    fields = [ResultField.from_column(column, ucd="ID_MAIN" if column.name == id_name else _SCS_UCDS.get(column.name))
              for column in chosen]
    limit = vo_setting("SCS_MAX_ROWS")
    blocks = []
    if sr > 0.0:
        queryset = apply_cone(rows_of(release=release), ra % 360.0, dec, sr).order_by("id")
        rows = queryset.values_list(*(column.field for column in chosen))[: limit + 1].iterator(chunk_size=_BLOCK)
        # Rows become numpy columns a block at a time (bounded memory for a wide cone).
        while block := list(islice(rows, _BLOCK)):
            blocks.append(Columns.from_rows(fields, block))
    columns = Columns.concatenate(blocks, len(fields))
    overflow = columns.n_rows > limit
    pieces = results_votable_pieces(
        fields, columns.head(limit) if overflow else columns, overflow=overflow,
        table_name=f"{release.name}_{kind}".replace("-", "_"),
        description=f"SPCANet release {release.name}, {kind}: cone of {sr:g} deg around ({ra:g}, {dec:g})",
        infos=[("release", release.name)],
    )
    return StreamingHttpResponse(pieces, content_type=VOTABLE_CONTENT_TYPE)
