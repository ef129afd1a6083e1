"""The stellar labels SPCANet predicts, in the network's output order.

Pure Python: imported by the numerical core, the models, the API and the exports, so the
order and names are defined once. The order is the published catalog's (paper Table 2).
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class Label:
    """One predicted quantity.

    ``field`` is the database column and API name; ``column`` the published CSV header
    (paper Table 2); ``element`` the chemical symbol for abundances, None otherwise.
    """

    field: str
    column: str
    unit: str
    description: str
    element: str | None = None

    @property
    def error_field(self) -> str:
        return f"{self.field}_err"

    @property
    def is_abundance(self) -> bool:
        return self.element is not None


def _abundance(symbol: str, name: str) -> Label:
    return Label(
        field=f"{symbol.lower()}_h",
        column=f"[{symbol}/H]",
        unit="dex",
        description=f"{name} abundance with respect to hydrogen",
        element=symbol,
    )


LABELS: tuple[Label, ...] = (
    Label("teff", "Teff", "K", "Effective temperature"),
    Label("logg", "logg", "dex", "Surface gravity, log10 of g in cm s^-2"),
    _abundance("Fe", "Iron"),
    _abundance("C", "Carbon"),
    _abundance("N", "Nitrogen"),
    _abundance("O", "Oxygen"),
    _abundance("Mg", "Magnesium"),
    _abundance("Al", "Aluminium"),
    _abundance("Si", "Silicon"),
    _abundance("S", "Sulphur"),
    _abundance("Ca", "Calcium"),
    _abundance("Ti", "Titanium"),
    _abundance("Cr", "Chromium"),
    _abundance("Ni", "Nickel"),
    _abundance("Cu", "Copper"),
)

LABEL_FIELDS: tuple[str, ...] = tuple(label.field for label in LABELS)
LABEL_ERROR_FIELDS: tuple[str, ...] = tuple(label.error_field for label in LABELS)
ABUNDANCE_FIELDS: tuple[str, ...] = tuple(label.field for label in LABELS if label.is_abundance)
