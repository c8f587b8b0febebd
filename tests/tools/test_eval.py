"""tools/eval.py: checkpoint evaluation and prediction-folder scoring, checked against numpy recomputations."""
from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from datasets import VOCSegmentation, build_eval_transform, read_rgb, save_label_png, voc_palette
from datasets.voc import read_labelmap
from deeplab.inference import Predictor, create_engine
from tools import eval as eval_tool
from tools import predict

TINY_CLASSES = ["background", "disc", "bar"]


def numpy_scores(matrix: np.ndarray) -> tuple[float, float]:
    """mIoU over classes present in GT or prediction, and pixel accuracy, straight from the definition."""
    tp = np.diag(matrix).astype(float)
    union = matrix.sum(0) + matrix.sum(1) - tp
    present = union > 0
    return float((tp[present] / union[present]).mean()), float(tp.sum() / matrix.sum())


def numpy_confusion(preds: list[np.ndarray], targets: list[np.ndarray], n: int) -> np.ndarray:
    """Confusion matrix ``[gt, pred]`` over all images, void (255) ignored."""
    matrix = np.zeros((n, n), dtype=np.int64)
    for pred, target in zip(preds, targets):
        keep = target != 255
        np.add.at(matrix, (target[keep], pred[keep]), 1)
    return matrix


def read_csv_matrix(path: Path) -> tuple[list[str], np.ndarray]:
    rows = list(csv.reader(path.open(encoding="utf-8")))
    return rows[0][1:], np.array([[int(v) for v in row[1:]] for row in rows[1:]])


@pytest.fixture(scope="module")
def tiny_voc(tmp_path_factory: pytest.TempPathFactory, make_checkpoint) -> tuple[Path, Path, torch.nn.Module]:
    """A 2-image VOC-format folder (odd sizes, void pixels, classes.txt) and a matching checkpoint."""
    root = tmp_path_factory.mktemp("tiny_voc")
    base = root / "VOCdevkit" / "VOC2012"
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (base / sub).mkdir(parents=True)
    rng = np.random.default_rng(0)
    ids = [f"img{i}" for i in range(2)]
    for i, sample_id in enumerate(ids):
        height, width = 37 + 4 * i, 45 - 2 * i
        image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        Image.fromarray(image).save(base / "JPEGImages" / f"{sample_id}.jpg")
        mask = rng.integers(0, 3, (height, width)).astype(np.uint8)
        mask[:3] = 255
        save_label_png(base / "SegmentationClass" / f"{sample_id}.png", mask)
    (base / "ImageSets/Segmentation/val.txt").write_text("\n".join(ids) + "\n")
    (root / "classes.txt").write_text("\n".join(TINY_CLASSES) + "\n")
    model = make_checkpoint(root / "tiny.pt", TINY_CLASSES, num_classes=3)
    return root, root / "tiny.pt", model


def test_eval_checkpoint_matches_independent_numpy(tiny_voc, tmp_path: Path) -> None:
    root, ckpt, model = tiny_voc
    out = tmp_path / "report" / "val.json"
    rc = eval_tool.main(["--checkpoint", str(ckpt), "--data-root", str(root), "--json", str(out),
                         "--workers", "0", "--device", "cpu", "--engine", "torch"])
    assert rc == 0
    report = json.loads(out.read_text())
    assert set(report["per_class_iou"]) == set(TINY_CLASSES)
    assert (tmp_path / "report" / "val_confusion.png").stat().st_size > 0
    assert (tmp_path / "report" / "val_per_class.png").stat().st_size > 0
    assert set(report["per_class_dice"]) == set(report["per_class_recall"]) == set(TINY_CLASSES)
    # How it was scored: the engine that ran and the output stride it ran at, not the flags left to their defaults.
    assert report["engine"] == "torch" and report["output_stride"] == model.config["output_stride"]
    names, matrix = read_csv_matrix(tmp_path / "report" / "val_confusion.csv")
    assert names == TINY_CLASSES
    # Independent of evaluate/ConfusionMatrix/reports: the same engine called directly, numpy confusion matrix.
    engine = create_engine(model, engine="torch")
    transform = build_eval_transform(mean=model.mean, std=model.std)
    base = root / "VOCdevkit" / "VOC2012"
    preds, targets = [], []
    for i in range(2):
        image = np.asarray(Image.open(base / "JPEGImages" / f"img{i}.jpg").convert("RGB"))
        target = np.asarray(Image.open(base / "SegmentationClass" / f"img{i}.png"))
        preds.append(engine(transform(image, target)[0][None]).argmax(1)[0].numpy())
        targets.append(target.astype(np.int64))
    expected = numpy_confusion(preds, targets, 3)
    np.testing.assert_array_equal(matrix, expected)
    miou, acc = numpy_scores(expected)
    assert report["miou"] == pytest.approx(miou, abs=1e-12)
    assert report["pixel_acc"] == pytest.approx(acc, abs=1e-12)


@pytest.mark.slow
def test_eval_flip_and_scales(tiny_voc, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root, ckpt, _ = tiny_voc
    out = tmp_path / "ms.json"
    rc = eval_tool.main(["--checkpoint", str(ckpt), "--data-root", str(root), "--json", str(out),
                         "--workers", "0", "--flip", "--scales", "0.5,1.0", "--engine", "torch"])
    assert rc == 0
    report = json.loads(out.read_text())
    assert report["flip"] is True and report["scales"] == [0.5, 1.0]
    _, matrix = read_csv_matrix(tmp_path / "ms_confusion.csv")
    targets = [np.asarray(Image.open(p)) for p in sorted((root / "VOCdevkit/VOC2012/SegmentationClass").glob("*.png"))]
    assert matrix.sum() == sum(int((t != 255).sum()) for t in targets)
    miou, acc = numpy_scores(matrix)
    assert report["miou"] == pytest.approx(miou, abs=1e-12) and report["pixel_acc"] == pytest.approx(acc, abs=1e-12)
    assert "mIoU" in capsys.readouterr().out


def test_bad_image_in_a_loader_worker_is_one_line(tiny_voc, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root, ckpt, _ = tiny_voc
    broken = tmp_path / "broken"
    shutil.copytree(root, broken)
    (broken / "VOCdevkit" / "VOC2012" / "JPEGImages" / "img1.jpg").write_text("not a JPEG")
    rc = eval_tool.main(["--checkpoint", str(ckpt), "--data-root", str(broken), "--workers", "2",
                         "--device", "cpu", "--engine", "torch"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1
    assert err.startswith("error: ") and "img1.jpg" in err and "Traceback" not in err


@pytest.mark.parametrize("scales", ["big", "nan", "inf", "1.0,-inf"])
def test_eval_bad_scales_is_user_error(scales: str, tiny_voc, capsys: pytest.CaptureFixture) -> None:
    root, ckpt, _ = tiny_voc
    assert eval_tool.main(["--checkpoint", str(ckpt), "--data-root", str(root), "--scales", scales]) == 2
    err = capsys.readouterr().err.strip()
    assert f"--scales {scales}: expected positive numbers" in err and len(err.splitlines()) == 1


def test_a_missing_data_root_is_named_before_the_classes_are_compared(tiny_voc, tmp_path: Path, capsys) -> None:
    _, ckpt, _ = tiny_voc
    assert eval_tool.main(["--checkpoint", str(ckpt), "--data-root", str(tmp_path / "typo")]) == 2
    err = capsys.readouterr().err.strip()
    assert f"{tmp_path / 'typo' / 'VOCdevkit' / 'VOC2012'}: VOC folder not found" in err, err
    assert "pass --download" not in err and "classes" not in err


def test_existing_report_files_are_kept_unless_overwrite(tiny_voc, tmp_path: Path, capsys) -> None:
    root, ckpt, _ = tiny_voc
    args = ["--checkpoint", str(ckpt), "--data-root", str(root), "--workers", "0", "--engine", "torch",
            "--json", str(tmp_path / "r.json")]
    (tmp_path / "r_per_class.png").write_text("mine")
    assert eval_tool.main(args) == 2
    err = capsys.readouterr().err.strip()
    assert f"{tmp_path / 'r_per_class.png'}: exists and this run did not write it" in err
    assert not (tmp_path / "r.json").exists() and (tmp_path / "r_per_class.png").read_text() == "mine"
    assert eval_tool.main([*args, "--overwrite"]) == 0
    assert (tmp_path / "r_per_class.png").read_bytes().startswith(b"\x89PNG")
    before = ckpt.read_bytes()  # the checkpoint read is never the report written, even with --overwrite
    assert eval_tool.main([*args[:-1], str(ckpt), "--overwrite"]) == 2
    assert f"{ckpt}: is the --checkpoint file; --json names a new file" in capsys.readouterr().err
    assert ckpt.read_bytes() == before
    assert json.loads((tmp_path / "r.json").read_text())["split"] == "val"


def test_json_dash_is_standard_output_not_a_file_named_dash(tiny_voc, tmp_path: Path, monkeypatch, capfd) -> None:
    root, _, _ = tiny_voc
    preds = shutil.copytree(root / "VOCdevkit" / "VOC2012" / "SegmentationClass", tmp_path / "preds")
    monkeypatch.chdir(tmp_path)
    assert eval_tool.main(["--pred-dir", str(preds), "--data-root", str(root), "--json", "-"]) == 0
    assert '"split": "val"' in capfd.readouterr().out
    assert [path.name for path in tmp_path.iterdir()] == ["preds"]  # no '-', '-_confusion.csv'...


def test_a_split_with_only_void_pixels_is_refused(tiny_voc, tmp_path: Path, capsys) -> None:
    root, ckpt, _ = tiny_voc
    shutil.copytree(root, tmp_path / "data")
    for mask in (tmp_path / "data" / "VOCdevkit" / "VOC2012" / "SegmentationClass").glob("*.png"):
        save_label_png(mask, np.full(np.asarray(Image.open(mask)).shape, 255, np.uint8))
    rc = eval_tool.main(["--checkpoint", str(ckpt), "--data-root", str(tmp_path / "data"), "--workers", "0",
                         "--engine", "torch"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "every ground-truth pixel is void (255); nothing to score" in err, err


@pytest.mark.slow
def test_eval_checkpoint_on_voc_mini(tmp_path: Path, voc_mini: Path, make_checkpoint) -> None:
    make_checkpoint(tmp_path / "voc.pt", None, num_classes=21)
    out = tmp_path / "mini.json"
    rc = eval_tool.main(["--checkpoint", str(tmp_path / "voc.pt"), "--data-root", str(voc_mini), "--json", str(out),
                         "--workers", "0"])
    assert rc == 0
    report = json.loads(out.read_text())
    assert len(report["per_class_iou"]) == 21 and "aeroplane" in report["per_class_iou"]
    _, matrix = read_csv_matrix(tmp_path / "mini_confusion.csv")
    targets = [np.asarray(Image.open(p)) for p in (voc_mini / "VOCdevkit/VOC2012/SegmentationClass").glob("*.png")]
    assert matrix.sum() == sum(int((t != 255).sum()) for t in targets)
    assert report["miou"] == pytest.approx(numpy_scores(matrix)[0], abs=1e-12)


@pytest.mark.slow
def test_pred_dir_reference_scores(tmp_path: Path, voc_mini: Path) -> None:
    reference = voc_mini / "reference_predictions"
    out = tmp_path / "ref.json"
    assert eval_tool.main(["--pred-dir", str(reference), "--data-root", str(voc_mini), "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["miou"] == pytest.approx(0.76416, abs=5e-6)
    assert report["pixel_acc"] == pytest.approx(0.98034, abs=5e-6)
    gt_dir = voc_mini / "VOCdevkit" / "VOC2012" / "SegmentationClass"
    stems = (voc_mini / "VOCdevkit/VOC2012/ImageSets/Segmentation/val.txt").read_text().split()
    preds = [np.asarray(Image.open(reference / f"{s}.png")).astype(np.int64) for s in stems]
    targets = [np.asarray(Image.open(gt_dir / f"{s}.png")).astype(np.int64) for s in stems]
    miou, acc = numpy_scores(numpy_confusion(preds, targets, 21))
    assert report["miou"] == pytest.approx(miou, abs=1e-12) and report["pixel_acc"] == pytest.approx(acc, abs=1e-12)
    assert report["per_class_iou"]["boat"] is None


@pytest.mark.parametrize("source", ["--checkpoint", "--pred-dir"])
def test_ids_listed_twice_are_named_as_training_names_them(source, tiny_voc, tmp_path: Path, capsys) -> None:
    """Each copy is scored again (as the devkit does): the numbers weigh that image double, so say so."""
    root, ckpt, _ = tiny_voc
    shutil.copytree(root, tmp_path / "data")
    (tmp_path / "data/VOCdevkit/VOC2012/ImageSets/Segmentation/twice.txt").write_text("img0\nimg1\nimg0\n")
    masks = shutil.copytree(tmp_path / "data/VOCdevkit/VOC2012/SegmentationClass", tmp_path / "preds")
    model_flags = ["--engine", "torch"] if source == "--checkpoint" else []
    rc = eval_tool.main([source, str(ckpt if source == "--checkpoint" else masks), "--data-root",
                         str(tmp_path / "data"), "--split", "twice", "--workers", "0", *model_flags])
    out = capsys.readouterr().out
    assert rc == 0 and out.startswith("warning: split twice lists img0 more than once; each copy counts again in "
                                      "the scores\n")


@pytest.mark.parametrize("damage", ["missing", "wrong_size"])
def test_pred_dir_bad_prediction_names_file(damage: str, tmp_path: Path, capsys: pytest.CaptureFixture,
                                            voc_mini: Path) -> None:
    preds = tmp_path / "preds"
    shutil.copytree(voc_mini / "reference_predictions", preds)
    victim = preds / "sample_0008.png"
    if damage == "missing":
        victim.unlink()
    else:
        save_label_png(victim, np.asarray(Image.open(victim))[:-1])
    assert eval_tool.main(["--pred-dir", str(preds), "--data-root", str(voc_mini)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {victim}") and len(err.splitlines()) == 1
    assert ("missing" if damage == "missing" else "513x512") in err


@pytest.mark.parametrize("predicted_at", ["image", "mask"])
def test_pred_dir_names_a_ground_truth_mask_of_another_size_than_its_image(predicted_at: str, tiny_voc,
                                                                          tmp_path: Path, capsys) -> None:
    """A prediction at its image's size is not to blame for a mask one row short, and one at the mask's size
    (another tool's) is no score of that image: either way the mask is named, as --checkpoint names it."""
    root = tmp_path / "data"
    shutil.copytree(tiny_voc[0], root, ignore=shutil.ignore_patterns("*.pt"))
    masks, preds = root / "VOCdevkit" / "VOC2012" / "SegmentationClass", tmp_path / "preds"
    shutil.copytree(masks, preds)
    short = np.asarray(Image.open(masks / "img1.png"))[:-1]
    save_label_png(masks / "img1.png", short)
    if predicted_at == "mask":
        save_label_png(preds / "img1.png", short)
    assert eval_tool.main(["--pred-dir", str(preds), "--data-root", str(root)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: {masks / 'img1.png'}: mask is 43x40 but its image img1.jpg is 43x41 (WxH)"


def test_pred_dir_reads_what_predict_writes(tiny_voc, tmp_path: Path) -> None:
    root, ckpt, _ = tiny_voc
    images = root / "VOCdevkit" / "VOC2012" / "JPEGImages"
    assert predict.main([str(images), "--checkpoint", str(ckpt), "--out", str(tmp_path / "preds"),
                         "--engine", "torch", "--max-size", "0"]) == 0
    common = ["--data-root", str(root), "--workers", "0"]
    assert eval_tool.main(["--pred-dir", str(tmp_path / "preds"), *common, "--json", str(tmp_path / "a.json")]) == 0
    assert eval_tool.main(["--checkpoint", str(ckpt), *common, "--engine", "torch",
                           "--json", str(tmp_path / "b.json")]) == 0
    # Scoring predict.py's masks is scoring the checkpoint: the same confusion matrix, pixel for pixel.
    np.testing.assert_array_equal(read_csv_matrix(tmp_path / "a_confusion.csv")[1],
                                  read_csv_matrix(tmp_path / "b_confusion.csv")[1])


@pytest.mark.parametrize("classes_from", ["classes.txt", "labelmap.txt"])
def test_pred_dir_of_rgb_colour_masks_scores_as_their_palette_pngs(classes_from, tiny_voc, make_cvat_folder,
                                                                  tmp_path: Path) -> None:
    """Other projects save predictions in colour (VainF's predict.py: the VOC palette); a CVAT-labelled set's may be
    in its labelmap.txt's colours."""
    root, _, _ = tiny_voc
    colourings = {"palette": None, "voc_rgb": voc_palette()}
    if classes_from == "labelmap.txt":
        gt = VOCSegmentation(root, split="val")
        make_cvat_folder(tmp_path / "cvat", {gt.ids[i]: np.minimum(gt[i][1], 2) for i in range(len(gt))}, split="val")
        root = tmp_path / "cvat"
        colourings["labelmap_rgb"] = read_labelmap(root / "labelmap.txt")[1].colours
    data, rng = VOCSegmentation(root, split="val"), np.random.default_rng(1)
    predictions = {data.ids[i]: rng.integers(0, 3, data.image_size(i)).astype(np.uint8) for i in range(len(data))}
    matrices = []
    for name, colours in colourings.items():
        (tmp_path / name).mkdir()
        for sample_id, pred in predictions.items():
            if colours is None:
                save_label_png(tmp_path / name / f"{sample_id}.png", pred)
            else:
                Image.fromarray(colours[pred]).save(tmp_path / name / f"{sample_id}.png")
        assert eval_tool.main(["--pred-dir", str(tmp_path / name), "--data-root", str(root),
                               "--json", str(tmp_path / f"{name}.json")]) == 0
        matrices.append(read_csv_matrix(tmp_path / f"{name}_confusion.csv")[1])
    assert all(np.array_equal(matrix, matrices[0]) for matrix in matrices) and matrices[0].sum() > 0


def test_pred_dir_with_void_predictions_on_labelled_pixels_names_the_file(tmp_path: Path, voc_mini: Path,
                                                                        capsys: pytest.CaptureFixture) -> None:
    preds = tmp_path / "preds"
    shutil.copytree(voc_mini / "reference_predictions", preds)
    gt = np.asarray(Image.open(voc_mini / "VOCdevkit" / "VOC2012" / "SegmentationClass" / "sample_0008.png"))
    pred = np.asarray(Image.open(preds / "sample_0008.png")).copy()
    pred[gt != 255] = 255
    save_label_png(preds / "sample_0008.png", pred)
    assert eval_tool.main(["--pred-dir", str(preds), "--data-root", str(voc_mini)]) == 2
    err = capsys.readouterr().err.strip()
    labelled = int((gt != 255).sum())
    assert err == (f"error: {preds / 'sample_0008.png'}: {labelled} labelled pixels are predicted as 255 (void); a "
                   "prediction gives every pixel a class 0..20")


def test_a_mask_file_given_as_the_prediction_folder_is_named_as_a_file(tiny_voc, tmp_path: Path, capsys) -> None:
    root, _, _ = tiny_voc
    mask = shutil.copy(root / "VOCdevkit" / "VOC2012" / "SegmentationClass" / "img0.png", tmp_path / "img0.png")
    assert eval_tool.main(["--pred-dir", str(mask), "--data-root", str(root)]) == 2
    assert capsys.readouterr().err == f"error: {mask}: is a file; --pred-dir names the folder of predicted masks\n"


def test_the_ground_truth_folder_given_as_predictions_is_refused(tiny_voc, capsys) -> None:
    """Scored against itself it would give every class an IoU of 1."""
    root, _, _ = tiny_voc
    masks = root / "VOCdevkit" / "VOC2012" / "SegmentationClass"
    assert eval_tool.main(["--pred-dir", str(masks), "--data-root", str(root)]) == 2
    assert capsys.readouterr().err == (f"error: {masks / 'img0.png'}: is the ground truth itself, not a prediction; "
                                       "--pred-dir names the folder of predicted masks (predict.py's --out)\n")


def test_any_orientation_scores_the_masks_the_predictor_gives_with_it(tiny_voc, tmp_path: Path, make_checkpoint,
                                                                      capsys) -> None:
    """Every image is scored as the eight-view average that ``Predictor.predict(any_orientation=True)`` returns,
    which differs from the plain and the mirrored average on this model, and the report records it."""
    root, _, _ = tiny_voc
    ckpt = tmp_path / "varied.pt"
    make_checkpoint(ckpt, TINY_CLASSES, num_classes=3, varied=True)
    out = tmp_path / "d4.json"
    assert eval_tool.main(["--checkpoint", str(ckpt), "--data-root", str(root), "--json", str(out), "--workers", "0",
                           "--device", "cpu", "--engine", "torch", "--any-orientation"]) == 0
    assert "(cpu, scales [1.0], every mirror and quarter turn)" in capsys.readouterr().out
    assert json.loads(out.read_text())["any_orientation"] is True
    _, matrix = read_csv_matrix(tmp_path / "d4_confusion.csv")
    predictor = Predictor.from_checkpoint(ckpt, device="cpu", engine="torch")
    expected, plain, mirrored = (np.zeros((3, 3), np.int64) for _ in range(3))
    base = root / "VOCdevkit" / "VOC2012"
    for path in sorted((base / "JPEGImages").glob("*.jpg")):
        image, target = read_rgb(path), np.asarray(Image.open(base / "SegmentationClass" / f"{path.stem}.png"))
        for counts, kwargs in ((expected, {"any_orientation": True}), (plain, {}), (mirrored, {"flip": True})):
            mask = predictor.predict(image, **kwargs).mask
            np.add.at(counts, (target[target != 255], mask[target != 255]), 1)
    np.testing.assert_array_equal(matrix, expected)
    assert not np.array_equal(expected, plain) and not np.array_equal(expected, mirrored)


@pytest.mark.parametrize(("flags", "named"), [(["--flip"], "--flip"),
                                              (["--flip", "--any-orientation"], "--flip, --any-orientation"),
                                              (["--scales", "0.5,1.0", "--output-stride", "8"],
                                               "--scales, --output-stride"),
                                              (["--engine", "int8"], "--engine")])
def test_model_flags_beside_pred_dir_are_refused(flags, named, tiny_voc, tmp_path: Path, capsys) -> None:
    """Saved masks are scored as they are: scores printed under --flip would silently be those without it."""
    root, _, _ = tiny_voc
    masks = root / "VOCdevkit" / "VOC2012" / "SegmentationClass"
    rc = eval_tool.main(["--pred-dir", str(masks), "--data-root", str(root), "--json", str(tmp_path / "r.json"),
                         *flags])
    assert rc == 2 and capsys.readouterr().err == (f"error: {named}: only with --checkpoint; --pred-dir scores the "
                                                   "saved masks as they are\n")
    assert not list(tmp_path.iterdir())


@pytest.mark.slow
def test_a_checkpoint_of_other_classes_is_refused_unless_asked(tiny_voc, tmp_path: Path, voc_mini: Path,
                                                               make_checkpoint, capsys) -> None:
    root, ckpt, _ = tiny_voc
    make_checkpoint(tmp_path / "voc.pt", ["background", *TINY_CLASSES[1:], *"abcdefghijklmnopqr"], num_classes=21)
    args = ["--data-root", str(root), "--workers", "0", "--engine", "torch", "--json", str(tmp_path / "r.json")]
    assert eval_tool.main(["--checkpoint", str(tmp_path / "voc.pt"), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {tmp_path / 'voc.pt'}: the checkpoint predicts 21 classes (background, disc, bar, "
                          f"a, ...) but {root / 'classes.txt'} has 3 (background, disc, bar)")
    assert eval_tool.main(["--checkpoint", str(tmp_path / "voc.pt"), *args, "--ignore-class-names"]) == 0
    assert len(json.loads((tmp_path / "r.json").read_text())["per_class_iou"]) == 21
    # The other way round: a 3-class model on VOC's 21 classes blames the checkpoint, not the masks.
    assert eval_tool.main(["--checkpoint", str(ckpt), "--data-root", str(voc_mini)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {ckpt}: the checkpoint predicts 3 classes") and "VOC's classes" in err
    make_checkpoint(tmp_path / "renamed.pt", ["background", "ball", "bar"], num_classes=3)
    args.append("--overwrite")  # r.json is there now
    assert eval_tool.main(["--checkpoint", str(tmp_path / "renamed.pt"), *args]) == 2
    assert "class 1 is 'ball' in the checkpoint but 'disc' in" in capsys.readouterr().err
    assert eval_tool.main(["--checkpoint", str(tmp_path / "renamed.pt"), *args, "--ignore-class-names"]) == 0
    assert list(json.loads((tmp_path / "r.json").read_text())["per_class_iou"]) == TINY_CLASSES


@pytest.mark.parametrize(("flag", "named"), [(["--scales", "0.001"], "--scales 0.001: shrinks a 45x37 image to 0x0"),
                                             (["--scales", "1,25"], "--scales 1,25: 25 enlarges each side 25 times "
                                                                    "(625 times the pixels and memory); at most 4"),
                                             (["--workers", "-1"], "--workers -1: must be 0"),
                                             (["--classes-latin-1"], "classes.txt: not UTF-8 text")])
def test_more_bad_input_is_one_line(flag, named, tiny_voc, tmp_path: Path, capsys) -> None:
    root, ckpt, _ = tiny_voc
    if flag == ["--classes-latin-1"]:
        shutil.copytree(root, tmp_path / "data")
        root, flag = tmp_path / "data", []
        (root / "classes.txt").write_bytes("background\ndisc\nbarre \xe0 roue\n".encode("latin-1"))
    rc = eval_tool.main(["--checkpoint", str(ckpt), "--data-root", str(root), "--workers", "0", "--engine", "torch",
                         *flag])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and named in err, err


def test_a_json_name_ending_in_a_slash_is_refused_as_a_folder(tiny_voc, tmp_path: Path, capsys) -> None:
    root, ckpt, _ = tiny_voc
    named = f"{tmp_path / 'reports'}/"
    rc = eval_tool.main(["--checkpoint", str(ckpt), "--data-root", str(root), "--json", named])
    expected = f"error: {named}: names a folder (it ends in '/'); --json names the file to write\n"
    assert rc == 2 and capsys.readouterr().err == expected
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(("sizes", "flag", "named"), [
    ([(20, 30), (2, 40)], [], "a 40x2 image: too small for this model, which needs at least 3 pixels a side"),
    ([(20, 30)], ["--scales", "0.1,1"], "--scales 0.1: shrinks a 30x20 image to 3x2 pixels (WxH), under the 3 a side "
                                        "this model needs; use larger scales")])
def test_images_or_scales_too_small_for_an_imported_model_are_one_line(sizes, flag, named, tmp_path: Path,
                                                                       make_voc_folder, imported_checkpoint,
                                                                       capsys) -> None:
    """VainF's unpadded 3x3 stem takes no side under 3 pixels: one line naming the image, not a conv traceback."""
    make_voc_folder(tmp_path, {f"im{i}": np.zeros(size, np.uint8) for i, size in enumerate(sizes)}, split="val")
    rc = eval_tool.main(["--checkpoint", str(imported_checkpoint("vainf")), "--data-root", str(tmp_path),
                         "--workers", "0", "--engine", "torch", *flag])
    culprit = VOCSegmentation(tmp_path, split="val").image_path(len(sizes) - 1)  # the image that is too small
    assert rc == 2 and capsys.readouterr().err == f"error: {culprit}: {named}\n"


def test_report_is_written_when_the_reader_of_the_table_went_away(tiny_voc, tmp_path: Path, monkeypatch,
                                                                   capsys) -> None:
    root, ckpt, _ = tiny_voc

    def closed_pipe(scores):  # `eval.py ... | head` with unbuffered output: printing the table fails
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(eval_tool, "format_scores", closed_pipe)
    rc = eval_tool.main(["--checkpoint", str(ckpt), "--data-root", str(root), "--workers", "0", "--engine", "torch",
                         "--json", str(tmp_path / "r.json")])
    assert rc == 141 and 0 <= json.loads((tmp_path / "r.json").read_text())["miou"] <= 1


def test_ctrl_c_during_evaluation_exits_130(tiny_voc, monkeypatch, capsys) -> None:
    root, ckpt, _ = tiny_voc

    def pressed_ctrl_c(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(eval_tool, "evaluate", pressed_ctrl_c)
    assert eval_tool.main(["--checkpoint", str(ckpt), "--data-root", str(root), "--engine", "torch"]) == 130
    assert capsys.readouterr().err.strip() == "interrupted (Ctrl-C)"


@pytest.mark.slow  # ONNX export and int8 quantisation
def test_eval_int8_calibrates_on_the_split(tiny_voc, tmp_path: Path) -> None:
    root, ckpt, _ = tiny_voc
    out = tmp_path / "int8.json"
    common = ["--checkpoint", str(ckpt), "--data-root", str(root), "--workers", "0"]
    assert eval_tool.main([*common, "--engine", "int8", "--json", str(out)]) == 0
    assert eval_tool.main([*common, "--engine", "torch", "--json", str(tmp_path / "fp32.json")]) == 0
    int8, fp32 = (read_csv_matrix(tmp_path / f"{name}_confusion.csv")[1] for name in ("int8", "fp32"))
    assert int8.sum() == fp32.sum()  # every labelled pixel scored
    assert json.loads(out.read_text())["miou"] == pytest.approx(json.loads((tmp_path / "fp32.json").read_text())["miou"],
                                                               abs=0.1)
