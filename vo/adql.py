"""ADQL to PostgreSQL: queryparser-python3 parses and translates, this module adapts.

queryparser (the Daiquiri team's ADQL 2.0 grammar) turns ADQL into PostgreSQL and
writes geometry in pgSphere's operators (``spoint(...) @ scircle(...)``). This site
does not need pgSphere: a point-in-circle test becomes the same indexable (dec, RA) box
and exact great-circle test as the API's cone filter (spectra/sky.py), which the
``(release, dec, ra)`` indexes answer (README, "VO services", for the measurement).
Geometry other than a POINT in a CIRCLE is refused with a clear message.

Pure Python, no Django: the safety of a query does not rest on this translation but on
the database role it runs as (vo/query.py).
"""

import math
import re
from dataclasses import dataclass

from spectra.sky import cone_box


class AdqlError(ValueError):
    """A query that cannot be run; the message says why, for the user."""


@dataclass(frozen=True)
class Translation:
    sql: str  # one PostgreSQL SELECT, no trailing semicolon
    tables: tuple[str, ...]  # the tables it reads, lower case "schema.table"


_GEOMETRY_FUNCTIONS = re.compile(r"\b(spoint|scircle|spoly|sbox|sline|spath|sellipse|spoint_dwithin)\s*\(|<->",
                                 re.IGNORECASE)
_OPERATOR = re.compile(r"\s*(!@|@|&&)\s*scircle\(")
_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def _outside_literals(text: str) -> str:
    """``text`` with string literals and quoted identifiers blanked out."""
    return re.sub(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"", lambda m: " " * len(m.group()), text)


def _balanced(text: str, start: int) -> tuple[list[str], int]:
    """The top-level comma-separated arguments of the parenthesis at ``text[start]`` and
    the index just after its closing parenthesis."""
    assert text[start] == "("
    depth, args, current, i, quote = 0, [], [], start, None
    while i < len(text):
        char = text[i]
        if quote:
            current.append(char)
            if char == quote:
                quote = None
        elif char in "'\"":
            quote = char
            current.append(char)
        elif char == "(":
            depth += 1
            if depth > 1:
                current.append(char)
        elif char == ")":
            depth -= 1
            if depth == 0:
                args.append("".join(current).strip())
                return args, i + 1
            current.append(char)
        elif char == "," and depth == 1:
            args.append("".join(current).strip())
            current = []
        else:
            current.append(char)
        i += 1
    raise AdqlError("unbalanced parentheses in a geometry function")


def _unwrap_radians(expression: str) -> str:
    if not expression.upper().startswith("RADIANS("):
        raise AdqlError("unexpected geometry expression")
    args, end = _balanced(expression, len("RADIANS"))
    if end != len(expression) or len(args) != 1:
        raise AdqlError("unexpected geometry expression")
    return args[0]


def _literal(expression: str) -> float | None:
    return float(expression) if _NUMBER.fullmatch(expression.strip()) else None


def point_in_circle_sql(ra: str, dec: str, ra0: str, dec0: str, radius: str) -> str:
    """SQL true where the point (``ra``, ``dec``) lies in the circle around (``ra0``,
    ``dec0``) of ``radius``, all SQL expressions in degrees. With a literal circle the
    test starts with the smallest (dec, RA) box around it (spectra.sky.cone_box), which
    a (dec, ra) index answers, then keeps the rows whose great-circle separation is
    within the radius (cos(separation) >= cos(radius))."""
    numbers = [_literal(value) for value in (ra0, dec0, radius)]
    if None in numbers:
        return (f"(sin(radians({dec})) * sin(radians({dec0})) + cos(radians({dec})) * cos(radians({dec0}))"
                f" * cos(radians({ra}) - radians({ra0})) >= cos(radians({radius})))")
    center_ra, center_dec, r = numbers
    if not (-90.0 <= center_dec <= 90.0):
        raise AdqlError(f"CIRCLE centre declination {center_dec} is outside [-90, 90]")
    if not r > 0.0:
        raise AdqlError(f"CIRCLE radius must be positive (got {r})")
    if r >= 180.0:
        return "TRUE"
    center_ra %= 360.0
    (dec_low, dec_high), ra_ranges = cone_box(center_ra, center_dec, r)
    parts = [f"{dec} BETWEEN {dec_low!r} AND {dec_high!r}"]
    if ra_ranges is not None:
        parts.append("(" + " OR ".join(f"{ra} BETWEEN {low!r} AND {high!r}" for low, high in ra_ranges) + ")")
    d0, a0 = math.radians(center_dec), math.radians(center_ra)
    parts.append(f"sin(radians({dec})) * {math.sin(d0)!r} + cos(radians({dec})) * {math.cos(d0)!r}"
                 f" * cos(radians({ra}) - {a0!r}) >= {math.cos(math.radians(r))!r}")
    return "(" + " AND ".join(parts) + ")"


def _rewrite_geometry(sql: str) -> str:
    out, i = [], 0
    lowered = sql.lower()
    while True:
        start = lowered.find("spoint(", i)
        if start < 0:
            out.append(sql[i:])
            break
        point_args, end = _balanced(sql, start + len("spoint"))
        match = _OPERATOR.match(sql, end)
        if match is None:
            raise AdqlError("only CONTAINS(POINT(...), CIRCLE(...)) and INTERSECTS of a POINT and a CIRCLE are "
                            "supported as geometry")
        circle_args, circle_end = _balanced(sql, match.end() - 1)
        if len(point_args) != 2 or len(circle_args) != 2 or not circle_args[0].lower().startswith("spoint("):
            raise AdqlError("CONTAINS needs POINT('ICRS', ra, dec) and CIRCLE('ICRS', ra, dec, radius)")
        center_args, _ = _balanced(circle_args[0], len("spoint"))
        ra, dec = (_unwrap_radians(arg) for arg in point_args)
        ra0, dec0 = (_unwrap_radians(arg) for arg in center_args)
        radius = _unwrap_radians(circle_args[1])
        test = point_in_circle_sql(ra, dec, ra0, dec0, radius)
        out.append(sql[i:start])
        out.append(f"NOT {test}" if match.group(1) == "!@" else test)
        i = circle_end
    result = "".join(out)
    if _GEOMETRY_FUNCTIONS.search(_outside_literals(result)):
        raise AdqlError("only CONTAINS(POINT(...), CIRCLE(...)) and INTERSECTS of a POINT and a CIRCLE are "
                        "supported as geometry (no DISTANCE, BOX, POLYGON or geometry in the select list)")
    return result


def _tables(sql: str) -> tuple[str, ...] | None:
    """The tables the translated query reads, or None where queryparser cannot tell."""
    from queryparser.postgresql import PostgreSQLQueryProcessor

    try:
        processor = PostgreSQLQueryProcessor()
        processor.set_query(sql)
        processor.process_query()
    except Exception:  # noqa: BLE001 - the database role still decides
        return None
    return tuple(sorted({".".join(part.strip('"').lower() for part in table if part) for table in processor.tables}))


def translate(adql: str, *, allowed_tables: set[str]) -> Translation:
    """One ADQL 2.0 SELECT as PostgreSQL, or :class:`AdqlError` saying why not.

    ``allowed_tables``: lower-case "schema.table" names that may be read; any other
    table (auth tables, drafts) is refused here, and in the database by the role.
    """
    from queryparser.adql import ADQLQueryTranslator
    from queryparser.exceptions import QuerySyntaxError

    text = (adql or "").strip()
    if not text:
        raise AdqlError("QUERY is empty")
    plain = _outside_literals(text).rstrip().rstrip(";")
    if ";" in plain:
        raise AdqlError("one SELECT statement per query")
    try:
        sql = ADQLQueryTranslator(text).to_postgresql()
    except QuerySyntaxError as error:
        details = "; ".join(f"line {line}, column {column + 1} near '{token}'" for line, column, token in error.args[0])
        raise AdqlError(f"ADQL syntax error ({details}); only SELECT is allowed") from None
    except Exception as error:  # noqa: BLE001 - queryparser raises several kinds
        raise AdqlError(f"the query could not be translated: {error}") from None
    sql = sql.strip().rstrip(";").strip()
    tables = _tables(sql)
    if tables is not None:
        unknown = [table for table in tables if table not in allowed_tables]
        if unknown:
            raise AdqlError(f"no such table: {', '.join(unknown)} (the tables are {', '.join(sorted(allowed_tables))}; "
                            "name them with their schema)")
    return Translation(_rewrite_geometry(sql), tables or ())
