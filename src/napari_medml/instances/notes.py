"""What an instance score hides: labels whose ids mark classes, not objects, and truth with no object."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["MERGED_RATIO", "merged_objects_notes"]

# An array of few ids whose foreground falls apart into more than this many separate parts
# per id is a class mask (a 0/1 mask of 57 nuclei scored AP 0 without a word, trial 41)
MERGED_RATIO = 4
_FEW_IDS = 8  # arrays of more ids are instance labels: not looked at (and not labelled again)


def merged_objects_notes(true: Any, pred: Any, true_name: str, pred_name: str, fix: str) -> list[str]:
    """Warning lines for either array whose ids each cover many separate objects, and a note
    when the truth holds no object.

    Instance scoring takes each id as one object, so a class mask (0/1: every nucleus id
    1) scores as one huge object and its AP says nothing. With no true object, precision,
    recall, F1 and AP are 1 by this project's convention when nothing is predicted either
    (StarDist's ``matching`` says 0), and 0 for any prediction with objects: neither measures
    a model.

    Parameters
    ----------
    true, pred : array-like
        Integer labels of one shape, (Y, X) or (Z, Y, X).
    true_name, pred_name : str
        How the lines name them (``"labels 'gt.tif'"``).
    fix : str
        What to do instead where the lines are read, e.g. ``"score classes without --instances"``.

    Returns
    -------
    list of str
        A ``note:`` line when ``true`` has no object; one ``warning:`` line per array with at
        most 8 ids whose foreground has more than :data:`MERGED_RATIO` separate parts per id
        (``scipy.ndimage.label``, corners connecting).
    """
    from scipy import ndimage

    notes = []
    if not np.any(np.asarray(true)):  # review 43: two empty files scored 1.0 without a word
        notes.append(f"note: {true_name} hold no object, " + (
            f"nor does {pred_name}: precision, recall, F1 and AP are 1 by this report's convention (nothing to "
            "find, nothing found; StarDist's matching says 0) and say nothing of a model"
            if not np.any(np.asarray(pred)) else
            f"so every object of {pred_name} is a false positive: precision, F1 and AP are 0 whatever it holds"))
    for name, labels in ((pred_name, pred), (true_name, true)):
        arr = np.asarray(labels)
        ids = np.unique(arr)
        n_ids = int(np.count_nonzero(ids))
        if not 0 < n_ids <= _FEW_IDS:
            continue
        # parts touching at a corner are one (a thin diagonal object is not cut into pixels)
        parts = int(ndimage.label(arr != 0, structure=np.ones((3,) * arr.ndim, bool))[1])
        if parts > MERGED_RATIO * n_ids:
            which = "id" if n_ids == 1 else "ids"
            notes.append(f"warning: {name} hold {n_ids} {which} over {parts} separate objects, each id "
                         f"scored as one object, so the scores say little: give each object its own id (e.g. "
                         f"scipy.ndimage.label), or {fix}")
    return notes
