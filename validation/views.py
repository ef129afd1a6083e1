"""The Table-1-like page of a release's validation."""

from django.shortcuts import get_object_or_404, render

from inference.selectors import release_visible_by_name, releases_visible

from .selectors import validation_table


def release_validation_page(request, name: str):
    release = get_object_or_404(releases_visible(user=request.user), name=name)
    table = validation_table(release=release)
    other_name = request.GET.get("compare")
    other = release_visible_by_name(user=request.user, name=other_name) if other_name else None
    compared = validation_table(release=other) if other else None
    rows = []
    for i, row in enumerate(table["labels"]):
        cells = [row[s] for s in table["surveys"]]
        if any(cells):
            compare_cells = [compared["labels"][i].get(s) for s in table["surveys"]] if compared else None
            rows.append({"column": row["column"], "unit": row["unit"], "cells": cells, "compare": compare_cells})
    return render(request, "validation/table.html", {
        "release": release, "surveys": table["surveys"], "rows": rows, "other": other,
    })
