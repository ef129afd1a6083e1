"""The numerical cores carry numpydoc docstrings.

``NUMERICAL_CORES`` below is the definition of "the numerical cores": the pure numpy /
scipy / keras modules that hold the science (no Django). Every public function and public
class they define (found by walking each module, so a new function is checked without
editing this file; a numba kernel counts as the Python function it compiles), and every
public method such a class defines itself, is run through
``numpydoc.validate.validate``. In ``core.sky`` only the functions that use no Django
object, directly or through the module's other functions, count; in ``spectra.mock`` only
the functions.

The checks asserted, and why this set:

- GL08: the object has a docstring at all;
- SS01: it opens with a summary line;
- PR01: every parameter of the signature is documented (a Parameters section that stays in
  step with the signature is where shapes, dtypes and units are stated);
- PR02: nothing is documented that is not a parameter (a renamed or removed argument
  leaves no stale entry behind);
- RT01: a function that returns something has a Returns section (the shape, dtype and unit
  of what comes back).

The other numpydoc checks are about form, not content (SS02-SS06 ask for a one-line summary
opening with a capital and an infinitive verb and ending in a full stop, PR08-PR10 for
capitalised descriptions, ES01, SA01 and EX01 for extended summaries, see-also sections and
examples); they would reject many accurate docstrings while adding nothing a reader of a
shape or a unit needs, so they are not asserted.
"""

import importlib
import inspect
import types

import pytest
from numpydoc.validate import validate

NUMERICAL_CORES: tuple[str, ...] = (
    "core.crossmatch",
    "core.sky",
    "inference.star_combine",
    "inference.catalog_rules",
    "inference.repeats",
    "validation.statistics",
    "inference.network.architecture",
    "inference.network.artifact",
    "inference.network.config",
    "inference.network.estimator",
    "inference.network.evaluation",
    "inference.network.inputs",
    "inference.network.linear",
    "inference.network.scaling",
    "inference.network.splits",
    "inference.network.uncertainty",
    "spectra.processing.batch",
    "spectra.processing.continuum",
    "spectra.processing.grids",
    "spectra.processing.kernels",
    "spectra.processing.pipeline",
    "spectra.processing.resample",
    "spectra.processing.rv",
    "spectra.processing.snr",
    "spectra.processing.spectrum_model",
    "spectra.mock.fidelity",
    "spectra.mock.harsh",
    "spectra.mock.ideal",
    "spectra.mock.instrument",
    "spectra.mock.labels",
    "spectra.mock.lines",
    "spectra.mock.survey",
)
FUNCTIONS_ONLY = ("spectra.mock.",)
CHECKED_CODES = frozenset({"GL08", "SS01", "PR01", "PR02", "RT01"})


def _uses_django(function, module, seen=None) -> bool:
    """Whether ``function`` names a Django object, directly or through the module's functions."""
    seen = set() if seen is None else seen
    if function in seen:
        return False
    seen.add(function)
    for name in function.__code__.co_names:
        target = getattr(module, name, None)
        if target is None:
            continue
        origin = target.__name__ if isinstance(target, types.ModuleType) else getattr(target, "__module__", "") or ""
        if origin == "django" or origin.startswith("django."):
            return True
        if inspect.isfunction(target) and target.__module__ == module.__name__ and _uses_django(target, module, seen):
            return True
    return False


def _public_objects(module_name: str) -> list[str]:
    """The qualified names of the public functions, classes and class methods ``module_name`` defines."""
    module = importlib.import_module(module_name)
    functions_only = module_name.startswith(FUNCTIONS_ONLY)
    names = []
    for name, obj in vars(module).items():
        if name.startswith("_") or getattr(obj, "__module__", None) != module_name:
            continue
        if not inspect.isfunction(obj) and inspect.isfunction(getattr(obj, "py_func", None)):
            obj = obj.py_func  # a numba kernel: its Python function carries the docstring
        if inspect.isfunction(obj):
            if not _uses_django(obj, module):
                names.append(f"{module_name}.{name}")
        elif inspect.isclass(obj) and not functions_only:
            names.append(f"{module_name}.{name}")
            for attr, member in vars(obj).items():
                if attr.startswith("_"):
                    continue
                if isinstance(member, (staticmethod, classmethod)):
                    member = member.__func__
                if inspect.isfunction(member) or isinstance(member, property):
                    names.append(f"{module_name}.{name}.{attr}")
    return names


CHECKED = [name for module_name in NUMERICAL_CORES for name in _public_objects(module_name)]


def test_every_numerical_core_is_walked():
    # Each module listed defines something public, so a wrong name or an empty walk shows.
    walked = {name.rsplit(".", 1)[0] for name in CHECKED} | {name.rsplit(".", 2)[0] for name in CHECKED}
    assert set(NUMERICAL_CORES) <= walked


@pytest.mark.parametrize("name", CHECKED)
def test_numpydoc_docstring(name):
    errors = [f"{code}: {message}" for code, message in validate(name)["errors"] if code in CHECKED_CODES]
    assert not errors, f"{name}:\n" + "\n".join(errors)
