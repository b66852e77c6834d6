"""Deterministic synthetic sample data for demos, tests and benchmarks.

Every generator is a pure function of its ``seed`` (``np.random.default_rng``),
runs in well under a second and returns a frozen dataclass of numpy arrays in
napari axis order plus spacing. Only numpy, SciPy and scikit-image are used, so
this module is safe to import without torch or Qt.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

import numpy as np
from scipy import ndimage as ndi

from napari_medml.errors import InputError

__all__ = [
    "Objects2D",
    "Phantom3D",
    "ShapeClasses",
    "phantom_3d",
    "shape_classes",
    "touching_objects_2d",
]


@dataclass(frozen=True)
class Phantom3D:
    """A synthetic MRI/CT-like volume with dense tissue labels.

    Attributes
    ----------
    image : np.ndarray
        float32 volume, axes (Z, Y, X).
    labels : np.ndarray
        uint8 labels of the same shape: 0 background, 1 body, 2 organ, 3 lesion.
    spacing : tuple of float
        Voxel size in mm per axis (Z, Y, X); anisotropic by default.
    class_names : Mapping[int, str]
        Foreground label id -> tissue name.
    """

    image: np.ndarray
    labels: np.ndarray
    spacing: tuple[float, ...]
    class_names: Mapping[int, str] = field(
        default_factory=lambda: {1: "body", 2: "organ", 3: "lesion"}
    )


# Tissue mean intensities (before bias field) and noise level: neighbouring
# tissues differ by ~3.5 noise standard deviations, enough for a small network
# trained briefly on CPU, yet their intensity histograms overlap.
_BACKGROUND = 0.1
_BODY = 1.0
_ORGAN = 1.7
_LESION = 2.4
_NOISE = 0.2
_BIAS = 0.08  # coefficient range of the quadratic bias field
_WALL = 4.0  # mm of body around the organ
_BLUR = 0.6  # partial-volume blur, in voxels of the finest axis


def _ellipsoid(
    coords: tuple[np.ndarray, ...],
    center: np.ndarray,
    semi_axes: np.ndarray,
    angle: float,
) -> np.ndarray:
    """Normalised radius of an ellipsoid rotated by ``angle`` about the first axis.

    Returns an array ``r`` with ``r <= 1`` inside; ``coords`` are physical
    (mm) coordinate grids that broadcast against each other.
    """
    z = coords[0] - center[0]
    y = coords[1] - center[1]
    x = coords[2] - center[2]
    c, s = np.cos(angle), np.sin(angle)
    yr = c * y + s * x
    xr = -s * y + c * x
    return np.sqrt((z / semi_axes[0]) ** 2 + (yr / semi_axes[1]) ** 2 + (xr / semi_axes[2]) ** 2)


def _bias_field(coords: tuple[np.ndarray, ...], extent: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A smooth multiplicative field, 1 + a random quadratic polynomial (about +-15 %)."""
    u = [(c / e) * 2.0 - 1.0 for c, e in zip(coords, extent)]  # each in [-1, 1]
    a = rng.uniform(-_BIAS, _BIAS, size=9)
    poly = (
        a[0] * u[0] + a[1] * u[1] + a[2] * u[2]
        + a[3] * u[0] * u[1] + a[4] * u[1] * u[2] + a[5] * u[0] * u[2]
        + a[6] * (u[0] ** 2 - 1 / 3) + a[7] * (u[1] ** 2 - 1 / 3) + a[8] * (u[2] ** 2 - 1 / 3)
    )
    return (1.0 + poly).astype(np.float32)


def _pick_center(
    candidates: np.ndarray, rng: np.random.Generator, region: np.ndarray | None = None
) -> np.ndarray | None:
    """Pick one candidate index row, preferring rows where ``region`` is True."""
    if region is not None and region.any():
        candidates = candidates[region]
    if len(candidates) == 0:
        return None
    return candidates[rng.integers(len(candidates))]


def phantom_3d(
    seed: int = 0,
    shape: tuple[int, int, int] = (48, 96, 96),
    spacing: tuple[float, float, float] = (2.0, 1.0, 1.0),
) -> Phantom3D:
    """Make a 3D body phantom with three tissue classes.

    The body is an ellipsoid of soft tissue spanning the whole Z range; an
    organ ellipsoid sits inside it and a few round lesions (7-10 voxels in-plane
    radius, elongated along Z) sit inside the organ or the body.
    All shapes are defined in millimetres, so they look right at any
    ``spacing``. Each class reaches into the last quarter of every axis, so a
    held-out block cut along any axis still contains every class.

    Parameters
    ----------
    seed : int
        Seed for positions, sizes, bias field and noise.
    shape : tuple of int
        Volume shape (Z, Y, X) in voxels.
    spacing : tuple of float
        Voxel size (Z, Y, X) in mm.

    Returns
    -------
    Phantom3D
        float32 image, uint8 labels (0 background, 1 body, 2 organ, 3 lesion),
        spacing and class names.
    """
    rng = np.random.default_rng(seed)
    shape = tuple(int(s) for s in shape)
    spacing = tuple(float(s) for s in spacing)
    if len(shape) != 3 or len(spacing) != 3 or min(spacing) <= 0:
        raise InputError(
            f"phantom_3d needs a 3D shape and positive 3D spacing, got shape={shape}, spacing={spacing}"
        )
    if min(shape) < 16:
        raise InputError(f"phantom_3d shape {shape} is too small: use at least 16 voxels per axis")
    extent = np.array(shape, float) * np.array(spacing)
    # open grids in mm at voxel centres
    coords = tuple(
        ((np.arange(n, dtype=np.float32) + 0.5) * d).reshape([-1 if i == k else 1 for k in range(3)])
        for i, (n, d) in enumerate(zip(shape, spacing))
    )
    mid = extent / 2

    # body: spans all of Z (semi-axis beyond the volume), ~90 % of Y and X
    body_center = mid + np.array([0.0, *rng.uniform(-0.01, 0.01, 2) * extent[1:]])
    body_axes = extent * np.array([0.9, rng.uniform(0.47, 0.5), rng.uniform(0.44, 0.48)])
    body = _ellipsoid(coords, body_center, body_axes, rng.uniform(-0.2, 0.2)) <= 1.0
    in_body = ndi.distance_transform_edt(body, sampling=spacing)

    # organ: off-centre towards the far Y/X corner so that it fills a good part
    # of the last fifth of Y (napari-medml's default held-out block) and reaches
    # into the last quarter of X; a body wall (``_WALL`` mm) stays around it
    organ_center = body_center + extent * np.array([0.0, rng.uniform(0.10, 0.13), rng.uniform(0.06, 0.10)])
    organ_axes = extent * np.array([0.75, rng.uniform(0.30, 0.33), rng.uniform(0.24, 0.28)])
    organ = (_ellipsoid(coords, organ_center, organ_axes, rng.uniform(-0.3, 0.3)) <= 1.0) & (in_body > _WALL)

    labels = np.zeros(shape, np.uint8)
    labels[body] = 1
    labels[organ] = 2

    # lesions: round in-plane (mm), longer along Z, inside the body (mostly in
    # the organ); the first three are centred in the last quarter of Z, Y and X
    # respectively so that every block along any axis holds lesion voxels
    in_organ = ndi.distance_transform_edt(organ, sampling=spacing)
    n_lesions = int(rng.integers(6, 9))
    finest = min(spacing)
    for i in range(n_lesions):
        r_inplane = rng.uniform(7.0, 10.0) * finest  # >= 7 voxels in-plane
        radius = np.array([max(1.5 * r_inplane, 3.0 * spacing[0]), r_inplane, r_inplane])
        in_tissue = in_organ if rng.random() < 0.6 else in_body
        candidates = np.argwhere(in_tissue > r_inplane + 1.0)
        region = None
        if i < 3:
            region = candidates[:, i] >= int(shape[i] * 0.8)
            if not region.any():
                candidates = np.argwhere(in_body > r_inplane + 1.0)
                region = candidates[:, i] >= int(shape[i] * 0.8)
        picked = _pick_center(candidates, rng, region)
        if picked is None:
            continue
        center = (picked + 0.5) * np.array(spacing)
        lesion = (_ellipsoid(coords, center, radius, 0.0) <= 1.0) & body
        labels[lesion] = 3

    means = np.array([_BACKGROUND, _BODY, _ORGAN, _LESION], np.float32)
    image = means[labels]
    # gentle internal texture and partial-volume edges
    texture = ndi.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma=3.0)
    texture *= 0.05 / max(float(texture.std()), 1e-6)
    image = image + texture * (labels > 0)
    image = ndi.gaussian_filter(image, sigma=[_BLUR / s * min(spacing) for s in spacing])
    image *= _bias_field(coords, extent, rng)
    image += rng.normal(0.0, _NOISE, size=shape).astype(np.float32)
    return Phantom3D(
        image=np.ascontiguousarray(image, dtype=np.float32),
        labels=labels,
        spacing=spacing,
        class_names={1: "body", 2: "organ", 3: "lesion"},
    )


@dataclass(frozen=True)
class Objects2D:
    """A 2D image of touching blob-like objects with instance labels.

    Attributes
    ----------
    image : np.ndarray
        float32 image, axes (Y, X).
    labels : np.ndarray
        int32 instance labels of the same shape: 0 background, 1..N objects.
    spacing : tuple of float
        Pixel size per axis (Y, X).
    """

    image: np.ndarray
    labels: np.ndarray
    spacing: tuple[float, ...] = (1.0, 1.0)


def _place_centers(
    rng: np.random.Generator, shape: tuple[int, int], radii: np.ndarray, overlap: float
) -> list[tuple[np.ndarray, float]]:
    """Rejection-sample centres in clumps so that most objects touch a neighbour.

    Each object after the first few is proposed just beside an already placed
    one; two objects may come as close as ``overlap * (r_i + r_j)``, which is
    below 1, so neighbours overlap and the nearest-object split turns the
    overlap into a shared border.
    """
    placed: list[tuple[np.ndarray, float]] = []
    margin = 4.0
    lo = np.array([margin, margin])
    hi = np.array(shape, float) - margin
    for r in radii:
        for _ in range(200):
            if len(placed) < 3 or rng.random() < 0.15:
                c = rng.uniform(lo + r * 0.5, hi - r * 0.5)
            else:
                c0, r0 = placed[rng.integers(len(placed))]
                phi = rng.uniform(0, 2 * np.pi)
                c = c0 + rng.uniform(overlap, 0.95) * (r + r0) * np.array([np.sin(phi), np.cos(phi)])
                if np.any(c < lo + r * 0.5) or np.any(c > hi - r * 0.5):
                    continue
            if all(np.hypot(*(c - c2)) >= overlap * (r + r2) for c2, r2 in placed):
                placed.append((c, float(r)))
                break
    return placed


def touching_objects_2d(seed: int = 0, shape: tuple[int, int] = (256, 256)) -> Objects2D:
    """Make a 2D image of ~20-30 touching cell-like objects with instance labels.

    Objects are random ellipses that overlap their neighbours; each pixel
    belongs to the object whose ellipse it lies deepest inside, so touching
    objects share a straight-ish border, as after a watershed split. Each object
    is dome-shaped (brightest in the middle), so there is a faint intensity dip
    where two objects touch.

    Parameters
    ----------
    seed : int
        Seed for positions, shapes, intensities and noise.
    shape : tuple of int
        Image shape (Y, X) in pixels.

    Returns
    -------
    Objects2D
        float32 image, int32 instance labels (0 background) and spacing (1, 1).
    """
    rng = np.random.default_rng(seed)
    if len(shape) != 2 or min(shape) < 32:
        raise InputError(f"touching_objects_2d needs a 2D shape of at least 32 pixels per axis, got {shape}")
    shape = (int(shape[0]), int(shape[1]))
    scale = min(shape) / 256.0
    n_target = int(rng.integers(24, 31))
    radii = rng.uniform(15.0, 22.0, size=n_target) * scale
    placed = _place_centers(rng, shape, radii, overlap=0.75)

    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float32)
    best = np.full(shape, np.inf, np.float32)  # normalised radius of the owning ellipse
    labels = np.zeros(shape, np.int32)
    for k, (c, r) in enumerate(placed, start=1):
        aspect = rng.uniform(1.0, 1.4)
        a, b = r * np.sqrt(aspect), r / np.sqrt(aspect)
        t = rng.uniform(0, np.pi)
        dy, dx = yy - c[0], xx - c[1]
        u = np.cos(t) * dy + np.sin(t) * dx
        v = -np.sin(t) * dy + np.cos(t) * dx
        rho = np.sqrt((u / a) ** 2 + (v / b) ** 2)
        own = (rho <= 1.0) & (rho < best)
        labels[own] = k
        best[own] = rho[own]

    brightness = np.concatenate([[0.0], rng.uniform(0.6, 1.0, size=len(placed))]).astype(np.float32)
    dome = np.where(labels > 0, 1.0 - 0.45 * np.minimum(best, 1.0) ** 2, 0.0).astype(np.float32)
    image = 0.1 + brightness[labels] * dome
    image = ndi.gaussian_filter(image, sigma=1.0)
    image += rng.normal(0.0, 0.05, size=shape).astype(np.float32)
    return Objects2D(image=image.astype(np.float32), labels=labels, spacing=(1.0, 1.0))


@dataclass(frozen=True)
class ShapeClasses:
    """A stack of single-shape images for classification (smooth vs irregular).

    Attributes
    ----------
    images : np.ndarray
        float32 stack, axes (N, Y, X).
    classes : np.ndarray
        int64 class id per sample, shape (N,): 1 smooth, 2 irregular.
    labels : np.ndarray
        uint8 masks (N, Y, X): each sample's shape painted with its class id.
    spacing : tuple of float
        Pixel size (Y, X) of each image.
    class_names : Mapping[int, str]
        Class id -> name.
    """

    images: np.ndarray
    classes: np.ndarray
    labels: np.ndarray
    spacing: tuple[float, ...] = (1.0, 1.0)
    class_names: Mapping[int, str] = field(default_factory=lambda: {1: "smooth", 2: "irregular"})


def _shape_mask(rng: np.random.Generator, size: int, irregular: bool) -> np.ndarray:
    """Rasterise one random smooth ellipse or spiky/lobed star as a boolean mask."""
    r0 = rng.uniform(0.16, 0.26) * size
    center = rng.uniform(0.5 * size - 0.12 * size, 0.5 * size + 0.12 * size, size=2)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    dy, dx = yy - center[0], xx - center[1]
    rot = rng.uniform(0, 2 * np.pi)
    theta = np.arctan2(dy, dx) - rot
    rho = np.hypot(dy, dx)
    if irregular:
        # star outline: several sharp spikes or deep lobes around the circle
        k = int(rng.integers(5, 10))
        amp = rng.uniform(0.3, 0.45)
        wobble = rng.uniform(0.0, 0.1) * np.sin(2 * theta + rng.uniform(0, 2 * np.pi))
        outline = r0 * (1.0 + amp * np.sin(k * theta) + wobble)
    else:
        # ellipse in polar form: r(theta) = ab / sqrt((b cos)^2 + (a sin)^2)
        aspect = rng.uniform(1.0, 1.6)
        a, b = r0 * np.sqrt(aspect), r0 / np.sqrt(aspect)
        outline = a * b / np.sqrt((b * np.cos(theta)) ** 2 + (a * np.sin(theta)) ** 2)
    return rho <= outline


def shape_classes(seed: int = 0, n: int = 64, size: int = 64) -> ShapeClasses:
    """Make a balanced stack of smooth (class 1) and irregular (class 2) shapes.

    Smooth shapes are ellipses; irregular ones are star-like outlines with 5-9
    spikes or lobes. Size, position, rotation, intensity and background vary at
    random, and Gaussian noise is added, so only the outline tells the classes
    apart.

    Parameters
    ----------
    seed : int
        Seed for classes, shapes, intensities and noise.
    n : int
        Number of samples; classes are balanced (``n // 2`` smooth).
    size : int
        Side length of each square image in pixels.

    Returns
    -------
    ShapeClasses
        float32 images (N, Y, X), class ids (N,), uint8 masks painted with the
        class id, spacing and class names.
    """
    if n < 2 or size < 24:
        raise InputError(f"shape_classes needs n >= 2 and size >= 24, got n={n}, size={size}")
    rng = np.random.default_rng(seed)
    classes = rng.permutation(np.array([1] * (n // 2) + [2] * (n - n // 2), dtype=np.int64))
    images = np.empty((n, size, size), np.float32)
    labels = np.zeros((n, size, size), np.uint8)
    for i, cls in enumerate(classes):
        mask = _shape_mask(rng, size, irregular=cls == 2)
        labels[i][mask] = cls
        background = rng.uniform(0.0, 0.2)
        foreground = background + rng.uniform(0.5, 0.9)
        img = np.where(mask, foreground, background).astype(np.float32)
        img = ndi.gaussian_filter(img, sigma=0.7)
        images[i] = img + rng.normal(0.0, 0.06, size=(size, size)).astype(np.float32)
    return ShapeClasses(images=images, classes=classes, labels=labels, spacing=(1.0, 1.0))
