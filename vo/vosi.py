"""VOSI documents of the TAP service: availability, capabilities (TAPRegExt) and the
table set, the last from vo/tables.py like TAP_SCHEMA."""

from xml.sax.saxutils import escape

from .conf import vo_setting
from .setup import _TAP_SCHEMA_TABLES, PRINCIPAL, SCHEMA_DESCRIPTIONS, TAP_SCHEMA, TAP_SCHEMA_DESCRIPTIONS
from .tables import SCHEMA, TAP_TABLES, votable_datatype

_HEAD = '<?xml version="1.0" encoding="UTF-8"?>\n'


def availability(available: bool, note: str) -> str:
    return (
        f'{_HEAD}<vosi:availability xmlns:vosi="http://www.ivoa.net/xml/VOSIAvailability/v1.0">\n'
        f"  <vosi:available>{'true' if available else 'false'}</vosi:available>\n"
        f"  <vosi:note>{escape(note)}</vosi:note>\n"
        "</vosi:availability>\n"
    )


def capabilities(base_url: str) -> str:
    """The TAP service's capabilities (VOSI 1.1, TAPRegExt 1.0): ADQL 2.0 with the
    geometry it supports, VOTable and CSV, MAXREC's default and limit, time limits."""
    def interface(path: str, role: str = "") -> str:
        return (f'    <interface xsi:type="vs:ParamHTTP"{role}>\n'
                f'      <accessURL use="full">{escape(base_url + path)}</accessURL>\n    </interface>\n')

    sync_s, async_s = int(vo_setting("TAP_SYNC_TIMEOUT_S")), int(vo_setting("TAP_ASYNC_TIMEOUT_S"))
    retention = int(vo_setting("TAP_JOB_RETENTION_S"))
    formats = "".join(
        f"    <outputFormat>\n      <mime>{mime}</mime>\n      <alias>{alias}</alias>\n    </outputFormat>\n"
        for mime, alias in (("application/x-votable+xml", "votable"), ("text/csv", "csv"))
    )
    geometry = "".join(
        f'        <feature>\n          <form>{name}</form>\n        </feature>\n'
        for name in ("POINT", "CIRCLE", "CONTAINS", "INTERSECTS", "DISTANCE")
    )
    return (
        f"{_HEAD}<vosi:capabilities xmlns:vosi=\"http://www.ivoa.net/xml/VOSICapabilities/v1.0\"\n"
        '    xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"\n'
        '    xmlns:vs="http://www.ivoa.net/xml/VODataService/v1.1"\n'
        '    xmlns:tr="http://www.ivoa.net/xml/TAPRegExt/v1.0">\n'
        '  <capability standardID="ivo://ivoa.net/std/TAP" xsi:type="tr:TableAccess">\n'
        + interface("", ' role="std" version="1.1"')
        + '    <language>\n      <name>ADQL</name>\n'
        '      <version ivo-id="ivo://ivoa.net/std/ADQL#v2.0">2.0</version>\n'
        "      <description>ADQL 2.0 SELECT; geometry: a POINT in a CIRCLE (CONTAINS, INTERSECTS), DISTANCE</description>\n"
        '      <languageFeatures type="ivo://ivoa.net/std/TAPRegExt#features-adqlgeo">\n'
        + geometry
        + "      </languageFeatures>\n    </language>\n"
        + formats
        + f"    <retentionPeriod>\n      <default>{retention}</default>\n      <hard>{retention}</hard>\n"
        "    </retentionPeriod>\n"
        f"    <executionDuration>\n      <default>{async_s}</default>\n      <hard>{async_s}</hard>\n"
        "    </executionDuration>\n"
        f'    <outputLimit>\n      <default unit="row">{vo_setting("TAP_MAXREC_DEFAULT")}</default>\n'
        f'      <hard unit="row">{vo_setting("TAP_MAXREC_LIMIT")}</hard>\n    </outputLimit>\n'
        "  </capability>\n"
        '  <capability standardID="ivo://ivoa.net/std/VOSI#capabilities">\n'
        + interface("/capabilities")
        + "  </capability>\n"
        '  <capability standardID="ivo://ivoa.net/std/VOSI#availability">\n'
        + interface("/availability")
        + "  </capability>\n"
        '  <capability standardID="ivo://ivoa.net/std/VOSI#tables-1.1">\n'
        + interface("/tables")
        + "  </capability>\n"
        f"  <!-- synchronous queries stop after {sync_s} s -->\n"
        "</vosi:capabilities>\n"
    )


def _column(name: str, description: str | None, unit: str | None, ucd: str | None, datatype: str,
            arraysize: str | None, principal: bool, indexed: bool) -> str:
    parts = ["        <column>", f"<name>{escape(name)}</name>"]
    if description:
        parts.append(f"<description>{escape(description)}</description>")
    if unit:
        parts.append(f"<unit>{escape(unit)}</unit>")
    if ucd:
        parts.append(f"<ucd>{escape(ucd)}</ucd>")
    size = f' arraysize="{arraysize}"' if arraysize else ""
    parts.append(f'<dataType xsi:type="vs:VOTableType"{size}>{datatype}</dataType>')
    if indexed:
        parts.append("<flag>indexed</flag>")
    if principal:
        parts.append("<flag>primary</flag>")
    parts.append("</column>\n")
    return "".join(parts)


def tableset() -> str:
    """The VOSI table set (VODataService 1.1): every published table and TAP_SCHEMA."""
    out = [f'{_HEAD}<vosi:tableset xmlns:vosi="http://www.ivoa.net/xml/VOSITables/v1.0"\n'
           '    xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"\n'
           '    xmlns:vs="http://www.ivoa.net/xml/VODataService/v1.1">\n',
           f"  <schema>\n    <name>{SCHEMA}</name>\n    <description>{escape(SCHEMA_DESCRIPTIONS[SCHEMA])}"
           "</description>\n"]
    for table in TAP_TABLES:
        out.append(f'    <table type="view">\n      <name>{table.name}</name>\n'
                   f"      <description>{escape(table.description)}</description>\n")
        for column in table.columns:
            datatype, arraysize = votable_datatype(column)
            out.append(_column(column.name, column.description, column.unit, column.ucd, datatype, arraysize,
                               column.name in PRINCIPAL, column.name in table.indexed))
        out.append("    </table>\n")
    out.append(f"  </schema>\n  <schema>\n    <name>{TAP_SCHEMA}</name>\n"
               f"    <description>{escape(SCHEMA_DESCRIPTIONS[TAP_SCHEMA])}</description>\n")
    for name, definition in _TAP_SCHEMA_TABLES.items():
        out.append(f'    <table type="table">\n      <name>{TAP_SCHEMA}.{name}</name>\n'
                   f"      <description>{escape(TAP_SCHEMA_DESCRIPTIONS[name])}</description>\n")
        for column, datatype, description in definition:
            out.append(_column(column, description, None, None, datatype, "*" if datatype == "char" else None,
                               True, False))
        out.append("    </table>\n")
    out.append("  </schema>\n</vosi:tableset>\n")
    return "".join(out)
