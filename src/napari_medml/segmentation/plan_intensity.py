"""The plan's intensity decisions: the normalisation method from the fingerprint, and
images whose intensities lie on scales far apart, each z-scored by its own statistics first."""

from __future__ import annotations

from napari_medml.segmentation.fingerprint import Fingerprint

__all__ = ["normalization_choice", "scales_line"]


def normalization_choice(fp: Fingerprint) -> tuple[str, str]:
    """The planned normalisation method and why, after nnU-Net's per-modality rules.

    CT in Hounsfield units is clipped to the foreground's 0.5-99.5 percentiles, then
    z-scored with the foreground's mean and std; a constant background (skull-stripped
    MRI, padded images) is left out of the statistics; otherwise a z-score.

    Returns
    -------
    tuple of str
        ``ct``, ``zscore_nonzero`` or ``zscore``, and the reason shown in the plan.
    """
    if fp.modality == "ct":
        c = fp.channels[0]
        return "ct", (f"Hounsfield range {c.low:.0f}..{c.high:.0f}: clip to the foreground's 0.5-99.5 percentiles "
                      f"{c.fg_low:.0f}..{c.fg_high:.0f}, then z-score with the foreground's mean and std")
    if any(c.at_min >= 0.2 for c in fp.channels):
        share = max(c.at_min for c in fp.channels)
        return "zscore_nonzero", (f"{100 * share:.0f}% of the voxels are a constant background: z-score with "
                                  "the mean and std of the rest")
    return "zscore", "MRI/microscopy: z-score over the images"


def scales_line(scales: str, per_image: bool) -> str:
    """The plan's line on training images whose intensities lie on scales far apart
    (``Fingerprint.scales``): z-scored each by its own statistics (``per_image``), or not,
    since the user set the normalisation."""
    if per_image:
        return (f"each image z-scored by its own mean and std first (intensities on scales far apart: {scales}; "
                "nnU-Net's per-case z-score for MRI/microscopy): a z-score step in the recipe, re-applied to "
                "every image the model predicts")
    return (f"intensities on scales far apart ({scales}): the normalisation set by you takes one set of "
            "statistics for all images (the plan would z-score each image by its own first)")
