"""``napari-medml predict ... --out pred.zarr``: block-wise prediction into OME-Zarr stores.

The input (a Zarr/OME-Zarr folder read lazily, or any image file) is never held whole:
the block plan is printed first (blocks, block size, window overhead, memory), each
block is predicted and written, and an interrupted run is resumed by running the same
command again (finished blocks are recorded in the store). An instance bundle writes its
network's maps first (``<out>.foreground.zarr``, ``<out>.distance.zarr``), then the
objects block by block (:mod:`napari_medml.instances.to_zarr`).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from napari_medml.cli.common import UsageError, info, progress_bar, say_stored_order
from napari_medml.cli.progress import bar_progress, stop_on_interrupt

__all__ = ["check_targets", "read_image", "run_blocks", "run_instance_blocks", "say_recipe"]

BLOCKS_KEPT = "stopping at the next window; the finished blocks are kept"


def check_targets(args: argparse.Namespace) -> None:
    """``--out``, ``--probabilities``, ``--uncertainty`` must all be ``.zarr`` stores, none an input.

    Existing stores are checked when the model and image are known (resume or refuse).
    """
    from napari_medml.io.atomic import check_folder_target
    from napari_medml.io.zarr import is_zarr_path

    inputs = {p.resolve() for p in (args.image, args.instances) if p is not None}
    names = {"--out": args.out, "--probabilities": args.probabilities, "--uncertainty": args.uncertainty}
    seen: dict[Path, str] = {}
    for name, path in names.items():
        if path is None:
            continue
        if not is_zarr_path(path):
            raise UsageError(f"{name} '{path}' must be a .zarr store like --out (block-wise prediction "
                             "writes Zarr); or give --out a NIfTI/TIFF name to predict in memory")  # fmt: skip
        resolved = path.resolve()
        if resolved in inputs:
            raise UsageError(f"{name} '{path}' is an input: choose another output name")
        if resolved in seen:
            raise UsageError(f"{seen[resolved]} and {name} are both '{path}': give each output its own name")
        seen[resolved] = name
        if not path.exists():
            check_folder_target(path, allowed=(), what=f"{name} store")


def read_image(args: argparse.Namespace, model: Any) -> Any:
    """The ``--image``: a Zarr/OME-Zarr at ``--level`` (``match``: nearest the model's
    training spacing), lazily; any other file as ``io.read_volume`` reads it."""
    from napari_medml import io
    from napari_medml.cli.spacing_option import with_spacing
    from napari_medml.io.units import trained_unit
    from napari_medml.io.zarr import is_zarr_path, read_zarr

    if is_zarr_path(args.image):
        level = args.level if args.level == "match" else int(args.level or 0)
        vol = with_spacing(read_zarr(args.image, level, target_spacing=getattr(model, "spacing", None),
                                     axes=args.axes, target_unit=trained_unit(model)), args.spacing, args.image)[0]
        if args.level == "match" or vol.meta.get("level"):
            info(f"image '{args.image}': resolution level {vol.meta['level']} (spacing "
                 f"{', '.join(f'{s:g}' for s in vol.spacing)})")  # fmt: skip
        return in_model_unit_of(args, model, vol)
    if args.level not in (None, "0"):
        raise UsageError(f"--level is for multiscale Zarr images; '{args.image}' has one level")
    vol = with_spacing(io.read_volume(args.image, args.axes), args.spacing, args.image)[0]
    return in_model_unit_of(args, model, vol)


def in_model_unit_of(args: argparse.Namespace, model: Any, vol: Any) -> Any:
    """``vol`` with its voxel size in the length unit the model was trained in, said in one line
    (outputs are written in the image's own: ``io.units.as_read``)."""
    from napari_medml.io.spacing import unit_note
    from napari_medml.io.units import in_model_unit, length_axes, trained_unit

    converted, _ = in_model_unit(vol, trained_unit(model))
    if converted is not vol:
        spacing = tuple(float(vol.spacing[a]) for a in length_axes(vol))
        info(unit_note(vol.meta.get("unit"), trained_unit(model), spacing, f"image '{args.image}'"))
    return converted


def check_orientation(args: argparse.Namespace, model: Any, vol: Any) -> None:
    """Refuse a NIfTI stored in another orientation than the model's: blocks keep the stored grid.

    Raises
    ------
    InputError
        Naming both orientations and the output that reorients (a NIfTI file).
    """
    from napari_medml.io.geometry import grid_affine
    from napari_medml.segmentation.prediction import check_orientation as refuse_other_orientation

    n = sum(a in "ZYX" for a in vol.axes)
    affine = None if vol.affine is None else grid_affine(vol, n)
    refuse_other_orientation(model, affine, f"image '{args.image}'",
                             "block-wise prediction into .zarr keeps the stored grid and does not reorient; "
                             "write a NIfTI instead (e.g. --out pred.nii.gz), which is reoriented for the network "
                             "and back")


def say_recipe(model: Any, dtype: Any = None) -> None:
    """Say that the model's recipe is replayed block by block, after a pass over the image (of
    ``dtype``) for its statistics."""
    steps = model.config.data.preprocessing
    if steps:
        from napari_medml.preprocessing.lazy_recipe import statistics_passes
        from napari_medml.preprocessing.recipe import describe_step

        passes = statistics_passes(steps, dtype)
        info(f"the model's preprocessing recipe ({', '.join(describe_step(s) for s in steps)}) is replayed block by "
             "block" + (f", with the whole image's statistics: {passes} pass(es) over the image first" if passes
                        else ""))


def run_blocks(args: argparse.Namespace, model: Any, vol: Any, config: Any) -> int:
    """Plan, print the plan, predict block by block with a progress bar; 0 on success.

    ``model`` is one segmentation model or an ensemble (its members' mean probabilities);
    the store resumes only a run of this model on this ``--image`` (its file, values and
    geometry are recorded).
    """
    from napari_medml.engine.reports import StopToken
    from napari_medml.errors import Cancelled
    from napari_medml.segmentation.chunked import plan_blocks
    from napari_medml.segmentation.to_zarr import predict_to_zarr, volume_layout

    if args.fill_holes or args.keep_largest or args.min_size:
        raise UsageError("--min-size, --fill-holes and --keep-largest need the whole label map: leave them "
                         "out with a .zarr --out, or write a NIfTI/TIFF")  # fmt: skip
    from napari_medml.cli.common import spatial_spacing
    from napari_medml.io.spacing import spacing_note

    check_orientation(args, model, vol)
    image, _ = volume_layout(model, vol.data, vol.axes, None)
    from napari_medml.segmentation.prediction import model_intensity_note

    name = f"image '{args.image}'"
    for note in (spacing_note(spatial_spacing(vol, model.spatial_dims), model.spacing, name,
                              recipe=model.config.data.preprocessing),
                 model_intensity_note(model, vol.data, vol.axes, name)):
        if note:
            info(note)
    plan = plan_blocks(image.shape[1:], model.patch_size, channels=image.shape[0], classes=len(model.class_ids),
                       config=config, spacing=model.spacing, width=model.config.model.channels,
                       memory_mb=args.block_memory)
    info(f"block plan for {'x'.join(str(s) for s in plan.shape)} voxels: {plan.describe()}")
    say_recipe(model, image.dtype)
    with progress_bar("window") as bar:
        progress = bar_progress(bar, "predicted", "windows", after_s=0.0)
        try:
            with stop_on_interrupt(stop := StopToken(), BLOCKS_KEPT):
                result = predict_to_zarr(model, vol, args.out, config=config, plan=plan,
                                         probabilities=args.probabilities, uncertainty=args.uncertainty,
                                         source=args.image, progress=progress, stop=stop)  # fmt: skip
        except (KeyboardInterrupt, Cancelled):  # one line, as main() prints it (trial 41: two lines)
            raise Cancelled(_kept_line(args.out)) from None
    if result.resumed:
        info(f"resumed: {result.resumed} of {plan.count} block(s) were already done, {result.computed} computed "
             "now")
    written = [f"{p} (float16)" if name == "probabilities" else str(p) for name, p in result.stores.items()]
    say_stored_order(vol, list(result.stores.values()))
    say_background_only(result.stores["labels"], model, name)
    info("wrote " + ", ".join(written) + args.planned)
    return 0


def say_background_only(store: Path, model: Any, name: str) -> None:
    """One line when the written labels hold background only (read back block by block)."""
    import dask.array as da

    from napari_medml.io.zarr import read_zarr
    from napari_medml.segmentation.prediction import background_note

    note = background_note(da.asarray(read_zarr(store).data), model.class_ids, name)
    if note:
        info(note)


def run_instance_blocks(args: argparse.Namespace, model: Any) -> int:
    """Instances of an instance bundle, block by block into ``--out`` (and the maps' stores),
    then their per-object CSV table (``--table``, default ``<out>.csv``), measured block by block."""
    from napari_medml.engine.reports import StopToken
    from dataclasses import replace

    from napari_medml.cli.common import given, spatial_spacing
    from napari_medml.config import InferConfig
    from napari_medml.errors import Cancelled
    from napari_medml.instances.to_zarr import default_halo, instances_to_zarr, map_paths, plan_instance_blocks
    from napari_medml.io.spacing import spacing_note
    from napari_medml.segmentation.to_zarr import volume_layout

    for flag, value in (("--probabilities", args.probabilities), ("--uncertainty", args.uncertainty),
                        ("--instances", args.instances)):
        if value is not None:
            raise UsageError(f"{flag} is not used with an instance model and a .zarr --out: it writes the "
                             "objects (--out), the network's maps next to it and the table (--table)")  # fmt: skip
    from napari_medml.cli.common import check_derived_table, check_file_targets
    from napari_medml.instances.measure import is_instance_table

    stem = map_paths(args.out)["foreground"].name[: -len(".foreground.zarr")]
    table_path = args.table if args.table is not None else args.out.with_name(f"{stem}.csv")
    check_file_targets({"--table": table_path}, inputs=[args.image])
    check_derived_table(table_path, ours=is_instance_table, given=args.table is not None)
    params = replace(model.params, **given(seed_height=args.seed_height, min_distance=args.min_distance,
                                           min_size=args.min_object_size,
                                           foreground_threshold=args.foreground_threshold))  # fmt: skip
    vol = read_image(args, model)
    check_orientation(args, model, vol)
    if "C" in vol.axes and model.config.data.channel_names:  # review 48: segmented with swapped channels
        from napari_medml.cli.layout import in_model_channel_order

        vol = in_model_channel_order(vol, vol.axes.index("C"), model.config.data.channel_names, f"image '{args.image}'")
    image, _ = volume_layout(model, vol.data, vol.axes, None)
    spacing = spatial_spacing(vol, model.spatial_dims)
    note = spacing_note(spacing, model.spacing, f"image '{args.image}'", recipe=model.config.data.preprocessing)
    if note:
        info(note)
    halo = getattr(args, "halo", None)
    if halo is not None:
        if len(halo) not in (1, model.spatial_dims):
            raise UsageError(f"--halo takes one value or {model.spatial_dims} (one per spatial axis), "
                             f"got {len(halo)}")  # fmt: skip
        halo = tuple(halo) * (model.spatial_dims // len(halo))
    else:
        halo = default_halo(model, params, spacing)
    config = InferConfig(**given(overlap=args.overlap, sw_batch_size=args.sw_batch_size, tta=args.tta,
                                 device=args.device))  # fmt: skip
    plan = plan_instance_blocks(model, image.shape[1:], image.shape[0], config, args.block_memory)
    maps = map_paths(args.out)
    for name, path in maps.items():
        if path.resolve() == args.image.resolve():
            raise UsageError(f"the {name} map would be written to the input '{path}': choose another --out")
    say_recipe(model, image.dtype)
    from napari_medml.segmentation.label_blocks import labelling_memory

    info(f"block plan for {'x'.join(str(s) for s in plan.shape)} voxels: {plan.describe()}; objects labelled "
         f"with a halo of {'x'.join(str(h) for h in halo)} voxels (about "
         f"{labelling_memory(plan, halo) / 2**20:.0f} MiB per block); maps in "
         f"{', '.join(map(str, maps.values()))}")  # fmt: skip
    with progress_bar("step") as bar:
        progress = bar_progress(bar, "processed", "steps")
        try:
            with stop_on_interrupt(stop := StopToken(), BLOCKS_KEPT):
                result = instances_to_zarr(model, vol, args.out, config=config, params=params, plan=plan,
                                           halo=halo, spacing=spacing, maps=maps, progress=progress,
                                           stop=stop)  # fmt: skip
        except (KeyboardInterrupt, Cancelled):
            raise Cancelled(_kept_line(args.out, " and its maps")) from None
    if result.resumed:
        info(f"resumed: the network's maps of {result.resumed} of {plan.count} block(s) were already done")
    if result.grown:
        info(f"{result.grown} block(s) needed a larger halo for their objects")
    if result.approximate:
        info(f"{result.approximate} block(s): touching objects fill more than the largest halo; there each object "
             "and its neighbours were whole (a seed depending on objects further away could differ from an "
             "in-memory prediction): give a larger --halo to make them exact")  # fmt: skip
    from napari_medml.instances.measure import write_table_csv
    from napari_medml.instances.measure_blocks import measure_blocks
    from napari_medml.io.zarr import read_zarr

    geometry = read_zarr(args.out)  # the store's spacing and origin, its labels read block by block
    table = measure_blocks(geometry.data, image, block=plan.block, spacing=geometry.spacing,
                           origin=geometry.origin)  # fmt: skip
    written = [*result.stores.values(), write_table_csv(table_path, table)]
    say_stored_order(vol, written)
    params_line = ", ".join(f"{k} {v:g}" for k, v in params.to_dict().items())
    info(f"{result.objects} object(s) ({params_line}); wrote " + ", ".join(str(p) for p in written)
         + args.planned)
    return 0


def _kept_line(out: str | Path, what: str = "") -> str:
    """What a stopped block-wise prediction keeps: the blocks its store lists as finished (trial 50:
    stopped in its first block, it said "the finished blocks are kept", and the rerun began anew)."""
    from napari_medml.io.zarr import ATTRS_KEY

    done = 0
    if (Path(out) / ".zattrs").is_file():
        ours = json.loads((Path(out) / ".zattrs").read_text()).get(ATTRS_KEY) or {}
        done = len((ours.get("prediction") or {}).get("done") or ())
    if not done:
        return f"no block had finished, so '{out}' holds none yet; run the same command again to start it over"
    return (f"the {done} finished block{'s' if done > 1 else ''} {'are' if done > 1 else 'is'} kept in '{out}'{what}; "
            "run the same command again to resume")
