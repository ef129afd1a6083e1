"""Writes of the spectra app."""

from django.db import transaction
from django.db.models import F

from core.flags import SPECTRUM_FLAGS

from ..models import CurationRecord, Spectrum


def curation_records_write(*, user, target_type: str, changes: list[tuple[int, int, int]], flagged: bool, reason: str) -> None:
    """Log (id, flags before, flags after) changes made by a curator."""
    action = CurationRecord.Action.FLAG if flagged else CurationRecord.Action.UNFLAG
    CurationRecord.objects.bulk_create(
        [
            CurationRecord(
                target_type=target_type, target_id=pk, action=action, reason=reason,
                user=user, flags_before=before, flags_after=after,
            )
            for pk, before, after in changes
        ]
    )


@transaction.atomic
def spectra_curate(*, user, ids: list[int], flagged: bool, reason: str) -> int:
    """Set or clear the CURATOR_FLAGGED bit of spectra, with a logged reason.

    Only spectra whose bit actually changes are written and logged. Returns that count.
    """
    if not reason.strip():
        raise ValueError("a curation needs a reason")
    mask = SPECTRUM_FLAGS["CURATOR_FLAGGED"].mask
    rows = Spectrum.objects.select_for_update().filter(pk__in=ids).values_list("pk", "flags")
    changes = []
    for pk, before in rows:
        after = before | mask if flagged else before & ~mask
        if after != before:
            changes.append((pk, before, after))
    changed_ids = [pk for pk, _, _ in changes]
    new_flags = F("flags").bitor(mask) if flagged else F("flags").bitand(~mask)
    Spectrum.objects.filter(pk__in=changed_ids).update(flags=new_flags)
    curation_records_write(user=user, target_type=CurationRecord.Target.SPECTRUM, changes=changes, flagged=flagged, reason=reason)
    return len(changes)
