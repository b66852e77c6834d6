"""``napari-medml train --task classification`` and ``predict`` on classification bundles:
image level from a CSV and from a labels file, object and tile level once each, errors.
In-process through ``main()``; tiny networks, one torch thread, fixed seeds."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_medml.cli import main
from napari_medml.io import Volume, read_volume, write_volume
from napari_medml.samples import shape_classes

N, SIZE = 48, 32
SMALL = ["--features", "8", "--depth", "3", "--lr", "3e-3", "--device", "cpu", "--seed", "0"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def run_cli(capsys, *argv: object) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code: int, err: str, *words: str) -> None:
    assert code != 0
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("napari-medml: error: "), err
    for word in words:
        assert word in lines[0], lines[0]


def read_table(path: Path) -> tuple[list[str], np.ndarray]:
    with path.open(newline="") as fh:
        rows = list(csv.reader(fh))
    return rows[0], np.asarray(rows[1:], dtype=float)


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("shapes")
    sc = shape_classes(seed=0, n=N, size=SIZE)
    files = {"npy": folder / "stack.npy", "tif": folder / "stack.tif", "nii": folder / "stack.nii.gz"}
    np.save(files["npy"], sc.images)
    tifffile.imwrite(files["tif"], sc.images)
    write_volume(files["nii"], Volume(sc.images, (1.0, 0.8, 0.8), (0.0, 0.0, 0.0), None))
    held = np.arange(N) % 4 == 0  # every 4th sample unknown: accuracy is measured there
    (folder / "classes.csv").write_text(
        "sample,class\n" + "".join(f"{i},{0 if held[i] else c}\n" for i, c in enumerate(sc.classes)))
    paint = sc.labels.copy()
    paint[held] = 0
    write_volume(folder / "paint.nii.gz", Volume(paint, (1.0, 0.8, 0.8), (0.0, 0.0, 0.0), None, is_labels=True))
    return {**files, "csv": folder / "classes.csv", "paint": folder / "paint.nii.gz", "truth": sc.classes,
            "held": held, "folder": folder}


def train_image(capsys, stack: dict, classes: Path, out: Path) -> str:
    code, _, err = run_cli(capsys, "train", "--task", "classification", "--mode", "image", "--image", stack["npy"],
                           "--classes", classes, "--epochs", "8", "--steps-per-epoch", "10", *SMALL, "--out", out)
    assert code == 0, err
    return err


@pytest.mark.parametrize("fmt", ["tif", "nii"])
def test_image_mode_from_csv_then_predict(capsys, stack, tmp_path, fmt) -> None:
    bundle = tmp_path / "bundle"
    err = train_image(capsys, stack, stack["csv"], bundle)
    assert "accuracy" in err.splitlines()[-1] and "auc" in err.splitlines()[-1]  # metrics at the end
    out = tmp_path / ("pred.tif" if fmt == "tif" else "pred.nii.gz")
    code, _, err = run_cli(capsys, "predict", "--model", bundle, "--image", stack[fmt], "--out", out)
    assert code == 0, err
    labels = read_volume(out)
    assert labels.data.shape == (N, SIZE, SIZE)
    header, rows = read_table(tmp_path / "pred.csv")  # default table: next to --out
    assert header == ["sample", "class", "prob_1", "prob_2"] and len(rows) == N
    np.testing.assert_allclose(rows[:, 2] + rows[:, 3], 1.0, atol=1e-5)
    np.testing.assert_array_equal(labels.data[:, 0, 0], rows[:, 1])
    held = stack["held"]
    accuracy = np.mean(rows[held, 1] == stack["truth"][held])
    print(f"{fmt}: held-out accuracy {accuracy:.3f} on {held.sum()} samples")
    assert accuracy >= 0.9
    if fmt == "nii":
        np.testing.assert_allclose(labels.spacing, (1.0, 0.8, 0.8), rtol=1e-5)


def test_a_validation_accuracy_near_chance_is_said(capsys, stack, tmp_path) -> None:
    """Trial 40: with shuffled classes train ended 'accuracy 0.607' on 28 samples, without a word that
    the most frequent class alone scores 0.5 there."""
    import json

    from scipy.stats import binomtest

    classes = np.random.default_rng(0).permutation(stack["truth"])  # classes that say nothing of the images
    (tmp_path / "shuffled.csv").write_text("sample,class\n" + "".join(f"{i},{c}\n" for i, c in enumerate(classes)))
    err = train_image(capsys, stack, tmp_path / "shuffled.csv", tmp_path / "bundle")
    metrics = json.loads((tmp_path / "bundle" / "config.json").read_text())["metrics"]
    matrix = np.asarray(metrics["confusion_matrix"])
    n, correct, majority = int(matrix.sum()), int(np.trace(matrix)), matrix.sum(axis=1).max() / matrix.sum()
    p = binomtest(correct, n, majority, alternative="greater").pvalue
    assert p > 0.05 and (matrix.sum(axis=0) > 0).sum() == 2, matrix  # the case under test: two classes predicted
    assert err.splitlines()[-1] == (
        f"napari-medml: accuracy {correct / n:.3f} on {n} validation samples is not clearly above the "
        f"{majority:.3f} that putting every sample in the most frequent class scores (one-sided binomial test "
        f"p = {p:.2g}): the classifier may not tell the classes apart yet: train longer, label more samples of "
        "each class, or check the classes")


def test_samples_of_the_other_dimension_are_told_apart_from_a_single_image(capsys, stack, tmp_path) -> None:
    """Trial 40: a 2D-sample classifier given a stack of 3D samples was told 'a single 4D image has
    no sample axis - stack the images'; the line names the file and what its shape reads as."""
    bundle = tmp_path / "bundle"
    train_image(capsys, stack, stack["csv"], bundle)
    images = np.load(stack["npy"])
    np.save(tmp_path / "stack3d.npy", np.stack([images[:4]] * 3))  # (3, 4, Y, X): three 3D samples
    np.save(tmp_path / "one.npy", images[0])
    for name, reads in (("stack3d.npy", "a stack of 3D images"), ("one.npy", "a single 2D image")):
        code, _, err = run_cli(capsys, "predict", "--model", bundle, "--image", tmp_path / name, "--out",
                               tmp_path / "p.tif")
        assert_one_line_error(code, err, f"image '{tmp_path / name}' has shape", f"{reads}, but this classifier was "
                              "trained on 2D images: give a stack of 2D images (N, Y, X) (one image as N = 1), or "
                              "train a classifier on 3D images")
    assert not (tmp_path / "p.tif").exists()


def test_the_table_named_after_out_never_replaces_the_users_classes_file(capsys, stack, tmp_path) -> None:
    """The README's commands once wrote 'predict --out classes.tif' beside the classes.csv that
    train read: the table (classes.csv) replaced the user's ground truth without a word."""
    import shutil

    bundle = tmp_path / "bundle"
    classes = shutil.copy(stack["csv"], tmp_path / "classes.csv")
    train_image(capsys, stack, Path(classes), bundle)
    before = Path(classes).read_bytes()
    code, _, err = run_cli(capsys, "predict", "--model", bundle, "--image", stack["npy"], "--out",
                           tmp_path / "classes.tif")
    assert_one_line_error(code, err, "classes.csv", "--table", "classes-predicted.csv")
    assert Path(classes).read_bytes() == before and not (tmp_path / "classes.tif").exists()
    # the fix the line gives works, and a re-run replaces the table predict wrote itself
    for _ in range(2):
        code, _, err = run_cli(capsys, "predict", "--model", bundle, "--image", stack["npy"], "--out",
                               tmp_path / "classes.tif", "--table", tmp_path / "classes-predicted.csv")
        assert code == 0, err
    code, _, err = run_cli(capsys, "predict", "--model", bundle, "--image", stack["npy"], "--out",
                           tmp_path / "pred.tif")
    assert code == 0, err
    code, _, err = run_cli(capsys, "predict", "--model", bundle, "--image", stack["npy"], "--out",
                           tmp_path / "pred.tif")
    assert code == 0, err
    assert Path(classes).read_bytes() == before
    assert read_table(tmp_path / "pred.csv")[0][:2] == ["sample", "class"]
    # trial 40: named with --table (typed for --labels), the classes file was replaced all the same
    code, _, err = run_cli(capsys, "predict", "--model", bundle, "--image", stack["npy"], "--out",
                           tmp_path / "again.tif", "--table", classes)
    assert_one_line_error(code, err, f"--table '{classes}' is a file predict did not write (its columns: sample, "
                          "class): it is kept", "--table " + str(tmp_path / "classes-predicted.csv"))
    assert Path(classes).read_bytes() == before and not (tmp_path / "again.tif").exists()


def test_image_mode_from_labels_file_with_table_and_probabilities(capsys, stack, tmp_path) -> None:
    bundle = tmp_path / "bundle"
    train_image(capsys, stack, stack["paint"], bundle)
    out, table, probs = tmp_path / "classes.npy", tmp_path / "t.csv", tmp_path / "p.tif"
    code, _, err = run_cli(capsys, "predict", "--model", bundle, "--image", stack["tif"], "--out", out,
                           "--table", table, "--probabilities", probs)
    assert code == 0, err
    assert np.load(out).shape == (N, SIZE, SIZE)
    _, rows = read_table(table)
    assert len(rows) == N
    # class probabilities are channels: an ImageJ hyperstack stores them Z, C, Y, X (as Fiji
    # expects), and our reader gives them back in front
    with tifffile.TiffFile(probs) as tif:
        assert tif.series[0].axes == "ZCYX"
    prob_volume = read_volume(probs)
    assert prob_volume.axes == "CZYX"
    p = prob_volume.data
    assert p.shape == (2, N, SIZE, SIZE)
    np.testing.assert_allclose(p[:, :, 0, 0].T, rows[:, 2:4], atol=1e-5)


def object_scene(rows: int = 3, cols: int = 4, cell: int = 32):
    sc = shape_classes(seed=1, n=rows * cols, size=cell)
    image = np.zeros((rows * cell, cols * cell), np.float32)
    instances = np.zeros(image.shape, np.int32)
    paint = np.zeros(image.shape, np.uint8)
    for i in range(rows * cols):
        r, c = divmod(i, cols)
        sl = (slice(r * cell, (r + 1) * cell), slice(c * cell, (c + 1) * cell))
        image[sl] = sc.images[i]
        instances[sl][sc.labels[i] > 0] = i + 1
        paint[sl] = sc.labels[i]
    return image, instances, paint


def test_object_mode_cli(capsys, tmp_path) -> None:
    image, instances, paint = object_scene()
    for name, data in (("img", image), ("inst", instances), ("paint", paint)):
        np.save(tmp_path / f"{name}.npy", data)
    code, _, err = run_cli(capsys, "train", "--task", "classification", "--mode", "object",
                           "--image", tmp_path / "img.npy", "--instances", tmp_path / "inst.npy",
                           "--classes", tmp_path / "paint.npy", "--input-size", "24", "--epochs", "2",
                           "--steps-per-epoch", "3", *SMALL, "--out", tmp_path / "bundle")
    assert code == 0, err
    code, _, err = run_cli(capsys, "predict", "--model", tmp_path / "bundle", "--image", tmp_path / "img.npy",
                           "--out", tmp_path / "objects.npy")
    assert_one_line_error(code, err, "--instances")
    code, _, err = run_cli(capsys, "predict", "--model", tmp_path / "bundle", "--image", tmp_path / "img.npy",
                           "--instances", tmp_path / "inst.npy", "--out", tmp_path / "objects.npy")
    assert code == 0, err
    result = np.load(tmp_path / "objects.npy")
    assert result.shape == image.shape and set(np.unique(result)) <= {0, 1, 2}
    assert np.all(result[instances == 0] == 0)
    header, rows = read_table(tmp_path / "objects.csv")
    assert header[:2] == ["object", "class"] and header[-1] == "voxels" and len(rows) == 12
    # the same classes as a spreadsheet keyed by object id train the same network
    classes = {i + 1: int(paint[instances == i + 1].max()) for i in range(12)}
    (tmp_path / "classes.csv").write_text("object,class\n" + "".join(f"{k},{v}\n" for k, v in classes.items()))
    code, _, err = run_cli(capsys, "train", "--task", "classification", "--mode", "object",
                           "--image", tmp_path / "img.npy", "--instances", tmp_path / "inst.npy",
                           "--classes", tmp_path / "classes.csv", "--input-size", "24", "--epochs", "2",
                           "--steps-per-epoch", "3", *SMALL, "--out", tmp_path / "bundle-csv")
    assert code == 0, err
    code, _, err = run_cli(capsys, "predict", "--model", tmp_path / "bundle-csv", "--image", tmp_path / "img.npy",
                           "--instances", tmp_path / "inst.npy", "--out", tmp_path / "objects-csv.npy")
    assert code == 0, err
    np.testing.assert_array_equal(np.load(tmp_path / "objects-csv.npy"), result)
    (tmp_path / "bad.csv").write_text("object,class\n1,1\n2,2\n99,1\n")
    code, _, err = run_cli(capsys, "train", "--task", "classification", "--mode", "object",
                           "--image", tmp_path / "img.npy", "--instances", tmp_path / "inst.npy",
                           "--classes", tmp_path / "bad.csv", *SMALL, "--out", tmp_path / "bundle-bad")
    assert_one_line_error(code, err, "lists object(s) 99 that instances", "(12 objects, ids 1..12)")
    assert not (tmp_path / "bundle-bad").exists()
    # trial 31: a class name was blamed on "labels 'names.csv'", a CSV of one class on what was "painted"
    (tmp_path / "names.csv").write_text("object,class\n1,large\n2,small\n")
    (tmp_path / "one.csv").write_text("object,class\n1,1\n2,1\n")
    for table, words in (("names.csv", (f"class file '{tmp_path / 'names.csv'}' line 2: 'large' is not a number",
                                        "its class id in the last column")),
                         ("one.csv", ("only class 1 is given among the 12 objects", "painted or in the classes "))):
        code, _, err = run_cli(capsys, "train", "--task", "classification", "--mode", "object",
                               "--image", tmp_path / "img.npy", "--instances", tmp_path / "inst.npy",
                               "--classes", tmp_path / table, *SMALL, "--out", tmp_path / "bundle-bad")
        assert_one_line_error(code, err, *words)


def test_tile_mode_cli(capsys, tmp_path) -> None:
    rng = np.random.default_rng(0)
    image = rng.normal(0.0, 0.1, (64, 64)).astype(np.float32)
    image[:, 32:] += np.sin(np.arange(32) * 1.5)[None, :]  # striped right half
    paint = np.zeros((64, 64), np.uint8)
    paint[4:60:16, 8] = 1
    paint[4:60:16, 40] = 2
    paint[4, 9] = 2  # a stroke into the left tile: a tie, the smaller id
    np.save(tmp_path / "img.npy", image)
    np.save(tmp_path / "paint.npy", paint)
    code, _, err = run_cli(capsys, "train", "--task", "classification", "--mode", "tile", "--image",
                           tmp_path / "img.npy", "--classes", tmp_path / "paint.npy", "--tile-size", "16",
                           "--epochs", "2", "--steps-per-epoch", "3", "--val-fraction", "0", *SMALL,
                           "--out", tmp_path / "bundle")
    assert code == 0, err
    # note 49: a tile over two painted classes took one without a word (objects said so)
    assert ("1 tile is painted with more than one class (tile 0): each takes the class painted on most of its "
            "voxels") in err
    assert ("no validation samples (validation fraction 0): no metrics; give --val-fraction 0.2 to measure"
            in err)
    code, _, err = run_cli(capsys, "predict", "--model", tmp_path / "bundle", "--image", tmp_path / "img.npy",
                           "--out", tmp_path / "tiles.npy", "--probabilities", tmp_path / "prob.npy")
    assert code == 0, err
    assert np.load(tmp_path / "tiles.npy").shape == (64, 64)
    assert np.load(tmp_path / "prob.npy").shape == (2, 64, 64)
    header, rows = read_table(tmp_path / "tiles.csv")
    assert header[:4] == ["tile", "start_y", "start_x", "class"] and len(rows) == 16
    # trial 38: --instances was ignored without a word by a classifier of tiles (or images)
    code, _, err = run_cli(capsys, "predict", "--model", tmp_path / "bundle", "--image", tmp_path / "img.npy",
                           "--instances", tmp_path / "paint.npy", "--out", tmp_path / "again.npy")
    assert_one_line_error(code, err, "--instances is for a classifier of objects; this one classifies tiles: "
                          "drop --instances")
    assert not (tmp_path / "again.npy").exists()


def test_errors_are_one_line(capsys, stack, tmp_path) -> None:
    one = tmp_path / "one.csv"
    one.write_text("".join(f"{1 if i < 10 else 0}\n" for i in range(N)))
    code, _, err = run_cli(capsys, "train", "--task", "classification", "--image", stack["npy"],
                           "--classes", one, *SMALL, "--out", tmp_path / "b")
    assert_one_line_error(code, err, "only class 1", "at least two")
    flat = tmp_path / "flat.npy"
    np.save(flat, np.zeros((32, 32), np.float32))
    code, _, err = run_cli(capsys, "train", "--task", "classification", "--image", flat,
                           "--classes", stack["csv"], *SMALL, "--out", tmp_path / "b")
    assert_one_line_error(code, err, "sample axis")
    code, _, err = run_cli(capsys, "train", "--task", "classification", "--image", stack["npy"],
                           "--labels", stack["paint"], *SMALL, "--out", tmp_path / "b")
    assert_one_line_error(code, err, "--classes")
    code, _, err = run_cli(capsys, "train", "--task", "classification", "--mode", "tile", "--image", flat,
                           "--classes", stack["csv"], *SMALL, "--out", tmp_path / "b")
    assert_one_line_error(code, err, "labels file")
    # review 21: options that do not go together, checked before torchrun starts (it printed 44 lines)
    code, _, err = run_cli(capsys, "train", "--task", "classification", "--image", stack["npy"], "--classes",
                           stack["csv"], "--folds", "3", "--nproc", "2", *SMALL, "--out", tmp_path / "b")
    assert_one_line_error(code, err, "folds 3", "trains one model")
    assert not (tmp_path / "b").exists()


@pytest.mark.parametrize(("extra", "words"), [
    (["--patch-size", "4", "4", "--sparse", "--background-id", "1"],
     "--patch-size, --sparse, --background-id: for segmentation; a classifier takes each image"),
    (["--val-margin", "3", "--foreground-fraction", "0.9"], "--val-margin, --foreground-fraction: for segmentation"),
    (["--instances", "inst.tif"], "--instances is for --level object (objects cropped from instance labels), not "
                                  "--level image: drop it"),
    (["--tile-size", "4"], "--tile-size is for --level tile, not --level image: drop it"),
    (["--spatial-dims", "3"], "--spatial-dims 3: the samples of image"),
    (["--spacing", "2", "1", "1"], "--spacing: a classifier takes the voxels as they are"),
], ids=["segmentation", "segmentation-split", "instances", "tile-size", "spatial-dims", "spacing"])
def test_options_a_classifier_would_ignore_are_refused(capsys, stack, tmp_path, extra, words) -> None:
    """Trial 29: each of these trained a classifier with the same weights as without it (and
    --spatial-dims 3 was stored as 2), while --object-box with --level image was refused."""
    code, _, err = run_cli(capsys, "train", "--task", "classification", "--image", stack["npy"], "--classes",
                           stack["csv"], *extra, *SMALL, "--out", tmp_path / "b")
    assert_one_line_error(code, err, words)
    assert not (tmp_path / "b").exists()


def test_help_lists_the_classification_options(capsys) -> None:
    assert main(["train", "--help"]) == 0
    text = capsys.readouterr().out
    for option in ("--task", "--mode", "--classes", "--instances", "--tile-size", "--input-size",
                   "--init-from", "--freeze-stages", "--label-smoothing", "--class-weights", "resnet18"):
        assert option in text
    assert main(["predict", "--help"]) == 0
    text = capsys.readouterr().out
    assert "--table" in text and "--instances" in text


def test_init_from_a_pretrain_bundle_takes_its_network_unless_given(capsys, stack, tmp_path) -> None:
    """As for segmentation: without --network/--features/--depth the start bundle's U-Net
    (width 4, depth 2, instance norm) becomes 'unet-encoder'; a given --features that does not
    fit is refused with the options that do."""
    import json

    np.save(tmp_path / "one.npy", np.load(stack["npy"])[0])  # one unlabeled 2D image
    code, _, err = run_cli(capsys, "pretrain", "--image", tmp_path / "one.npy", "--features", "4",
                           "--depth", "2", "--patch-size", "32", "32", "--epochs", "1", "--steps-per-epoch", "2",
                           "--device", "cpu", "--out", tmp_path / "pre")
    assert code == 0, err
    base = ["train", "--task", "classification", "--image", stack["npy"], "--classes", stack["csv"], "--init-from",
            tmp_path / "pre", "--epochs", "1", "--steps-per-epoch", "2", "--device", "cpu", "--seed", "0"]
    code, _, err = run_cli(capsys, *base, "--out", tmp_path / "clf")
    assert code == 0, err
    assert "network unet-encoder, width 4, depth 2, instance norm: the start bundle's" in err
    desc = json.loads((tmp_path / "clf" / "config.json").read_text())
    args = desc["network"]["arguments"]
    assert (args["network"], args["channels"], args["depth"], args["norm"]) == ("unet-encoder", 4, 2, "instance")
    assert desc["provenance"]["initial_weights"]["loaded"] == 10  # the whole encoder
    code, _, err = run_cli(capsys, *base, "--network", "unet-encoder", "--features", "8", "--out", tmp_path / "wide")
    assert_one_line_error(code, err, "learned tensors fit", "leave out --network, --features and --depth")
    assert not (tmp_path / "wide").exists()
    # and back: a segmentation started from that classifier is the U-Net it was the encoder of
    image = np.load(tmp_path / "one.npy")
    np.save(tmp_path / "mask.npy", (image > image.mean()).astype(np.uint8))
    code, _, err = run_cli(capsys, "train", "--image", tmp_path / "one.npy", "--labels", tmp_path / "mask.npy",
                           "--init-from", tmp_path / "clf", "--epochs", "1", "--steps-per-epoch", "2", "--device",
                           "cpu", "--seed", "0", "--out", tmp_path / "seg")
    assert code == 0, err  # was: unknown segmentation network 'unet-encoder' (a classification network)
    assert "network: unet (the start model's)" in err and "(classification)" in err
    args = json.loads((tmp_path / "seg" / "config.json").read_text())["network"]["arguments"]
    assert (args["network"], args["channels"], args["depth"]) == ("unet", 4, 2)


def test_object_box_common_is_stored_in_the_bundle(capsys, tmp_path) -> None:
    image, instances, paint = object_scene()
    for name, data in (("img", image), ("inst", instances), ("paint", paint)):
        np.save(tmp_path / f"{name}.npy", data)
    code, _, err = run_cli(capsys, "train", "--task", "classification", "--mode", "object",
                           "--image", tmp_path / "img.npy", "--instances", tmp_path / "inst.npy",
                           "--classes", tmp_path / "paint.npy", "--object-box", "common", "--input-size", "24",
                           "--epochs", "1", "--steps-per-epoch", "2", *SMALL, "--out", tmp_path / "bundle")
    assert code == 0, err
    params = json.loads((tmp_path / "bundle" / "config.json").read_text())["sample_params"]
    assert params["box"] == "common" and isinstance(params["box_side"], int) and params["box_side"] > 0
    code, _, err = run_cli(capsys, "predict", "--model", tmp_path / "bundle", "--image", tmp_path / "img.npy",
                           "--instances", tmp_path / "inst.npy", "--out", tmp_path / "objects.npy")
    assert code == 0, err
    assert np.load(tmp_path / "objects.npy").shape == image.shape
    assert "larger than the model's common box" not in err
    # the same objects twice as large: most are cut at the stored box, and the user is told
    np.save(tmp_path / "img2.npy", np.kron(image, np.ones((2, 2), np.float32)))
    np.save(tmp_path / "inst2.npy", np.kron(instances, np.ones((2, 2), np.int32)))
    code, _, err = run_cli(capsys, "predict", "--model", tmp_path / "bundle", "--image", tmp_path / "img2.npy",
                           "--instances", tmp_path / "inst2.npy", "--out", tmp_path / "objects2.npy")
    assert code == 0, err
    assert "objects are larger than the model's common box" in err and "resample it to theirs" in err, err


def test_a_run_without_validation_samples_says_why(capsys, tmp_path) -> None:
    """One labelled object per class: nothing can be held out (a class's only sample trains),
    whatever --val-fraction says; the last line names that, not --val-fraction."""
    image, instances, _ = object_scene()
    np.save(tmp_path / "img.npy", image)
    np.save(tmp_path / "inst.npy", instances)
    (tmp_path / "two.csv").write_text("object,class\n1,1\n2,2\n")
    code, _, err = run_cli(capsys, "train", "--task", "classification", "--mode", "object",
                           "--image", tmp_path / "img.npy", "--instances", tmp_path / "inst.npy",
                           "--classes", tmp_path / "two.csv", "--input-size", "24", "--epochs", "1",
                           "--steps-per-epoch", "2", *SMALL, "--out", tmp_path / "bundle")
    assert code == 0, err
    assert err.strip().splitlines()[-1] == (
        "napari-medml: no validation samples: no class has two labelled samples (a class's only sample stays "
        "in training), so no metrics: label at least two samples of each class, more for numbers worth reading")
    # trial 38: one class of one sample beside others of many: the scores are of the others, and that is said
    (tmp_path / "one.csv").write_text("object,class\n" + "".join(f"{i},1\n" for i in range(1, 9)) + "9,2\n")
    code, _, err = run_cli(capsys, "train", "--task", "classification", "--mode", "object",
                           "--image", tmp_path / "img.npy", "--instances", tmp_path / "inst.npy",
                           "--classes", tmp_path / "one.csv", "--input-size", "24", "--epochs", "1",
                           "--steps-per-epoch", "2", *SMALL, "--out", tmp_path / "bundle1")
    assert code == 0, err
    assert ("training per class {1: 6, 2: 1}; class 2 has one labelled object, kept for training, so the "
            "validation scores leave it out (label more to measure)") in err, err


def test_object_inputs_that_do_not_fit_get_one_line(capsys, tmp_path) -> None:
    image, instances, paint = object_scene()
    np.save(tmp_path / "img.npy", image)
    np.save(tmp_path / "inst.npy", instances)
    np.save(tmp_path / "short.npy", instances[:40])
    np.save(tmp_path / "paint.npy", paint)
    (tmp_path / "classes.csv").write_text("object,class\n" + "".join(f"{i},{1 + i % 2}\n" for i in range(1, 13)))
    common = ("train", "--task", "classification", "--image", tmp_path / "img.npy", *SMALL)
    # the shape is checked before the table's object ids are looked up in the instances
    code, _, err = run_cli(capsys, *common, "--mode", "object", "--instances", tmp_path / "short.npy",
                           "--classes", tmp_path / "classes.csv", "--out", tmp_path / "b1")
    assert_one_line_error(code, err, f"instances '{tmp_path / 'short.npy'}' have shape (40, 128) but image",
                          "has (96, 128): give the instance labels of this image")
    code, _, err = run_cli(capsys, *common, "--mode", "tile", "--tile-size", "32", "--object-box", "common",
                           "--classes", tmp_path / "paint.npy", "--out", tmp_path / "b2")
    assert_one_line_error(code, err, "--object-box is for --level object", "not --level tile: drop it")
    code, _, err = run_cli(capsys, *common, "--mode", "object", "--instances", tmp_path / "inst.npy",
                           "--classes", tmp_path / "classes.csv", "--input-size", "16", "--epochs", "1",
                           "--steps-per-epoch", "1", "--out", tmp_path / "b3")
    assert code == 0, err
    np.save(tmp_path / "vol.npy", np.stack([image] * 4))
    np.save(tmp_path / "vol_inst.npy", np.stack([instances] * 4))
    code, _, err = run_cli(capsys, "predict", "--model", tmp_path / "b3", "--image", tmp_path / "vol.npy",
                           "--instances", tmp_path / "vol_inst.npy", "--out", tmp_path / "vol_pred.npy")
    assert_one_line_error(code, err, "the instance labels are 3D (4, 96, 128), but this classifier was trained "
                          "on 2D objects: classify 2D images with it, or train a classifier on 3D objects")


def test_a_stack_of_three_pixel_images_stored_as_rgb_names_the_axes_that_read_it(capsys, tmp_path) -> None:
    """Trial 48: tifffile stores an (8, 3, 3) stack as one RGB image; the refusal said to "stack the
    images", which it was, and never named --axes ZYX, which works."""
    rng = np.random.default_rng(0)
    images = rng.normal(0, 1, (8, 3, 3)).astype(np.float32)
    images[4:] += 3
    tifffile.imwrite(tmp_path / "tiny.tif", (images * 20 + 100).astype(np.uint8))  # uint8 (8, 3, 3): RGB
    (tmp_path / "classes.csv").write_text("sample,class\n" + "".join(f"{i},{1 + (i >= 4)}\n" for i in range(8)))
    base = ["train", "--task", "classification", "--mode", "image", "--image", tmp_path / "tiny.tif", "--classes",
            tmp_path / "classes.csv", "--epochs", "1", "--steps-per-epoch", "2", "--features", "4", "--depth", "1",
            "--device", "cpu", "--val-fraction", "0.25", "--out", tmp_path / "c"]
    code, _, err = run_cli(capsys, *base)
    assert_one_line_error(code, err, "reads as one RGB image (Y, X and 3 colours, its file says so): if its first "
                                     "axis holds the samples, say so with --axes ZYX")
    code, _, err = run_cli(capsys, *base, "--axes", "ZYX")
    assert code == 0, err
