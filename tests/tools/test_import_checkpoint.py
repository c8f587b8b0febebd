"""tools/import_checkpoint.py end to end: what it prints, files it never overwrites, every kind of bad input,
and the imported checkpoint in predict.py, eval.py and export.py."""
from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF
from PIL import Image
from torchvision.models import mobilenet_v2, resnet101
from torchvision.models.segmentation import deeplabv3_mobilenet_v3_large

from backbones.base import IMAGENET_MEAN, IMAGENET_STD
from deeplab import DeepLabV3Plus, load_checkpoint
from tools import eval as eval_tool
from tools import export as export_tool
from tools import import_checkpoint as import_tool
from tools import predict


def run(args: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str, str]:
    rc = import_tool.main(args)
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def test_import_prints_what_it_found_and_never_overwrites(import_fixture, tmp_path: Path, capsys) -> None:
    out = tmp_path / "vainf.pt"
    rc, printed, _ = run([str(import_fixture("vainf") / "checkpoint.pth"), "--out", str(out)], capsys)
    assert rc == 0
    assert "VainF/DeepLabV3Plus-Pytorch DeepLabV3+ MobileNetV2" in printed
    assert "classes: 21, VOC names" in printed and "output stride: 16 (ASPP rates 6/12/18)" in printed
    assert f"tools/eval.py --checkpoint {out}" in printed and f"tools/train.py --init-from {out}" in printed
    ckpt = load_checkpoint(out)
    assert ckpt["model_config"]["decoder_convs"] == 1 and ckpt["source"]["project"] == "VainF/DeepLabV3Plus-Pytorch"
    before = out.read_bytes()
    bubbliiiing = str(import_fixture("bubbliiiing") / "checkpoint.pth")
    rc, _, err = run([bubbliiiing, "--out", str(out)], capsys)
    assert rc == 2 and err.startswith(f"error: {out}: exists and this run did not write it") and out.read_bytes() == before
    rc, printed, _ = run([bubbliiiing, "--out", str(out), "--overwrite", "--output-stride", "8"], capsys)
    assert rc == 0 and "bubbliiiing/deeplabv3-plus-pytorch" in printed
    assert load_checkpoint(out)["model_config"]["atrous_rates"] == [12, 24, 36]
    # The file being imported is never the one replaced, even when asked to overwrite.
    source = tmp_path / "theirs.pth"
    source.write_bytes((import_fixture("vainf") / "checkpoint.pth").read_bytes())
    rc, _, err = run([str(source), "--out", str(source), "--overwrite"], capsys)
    assert rc == 2 and f"{source}: is the imported file; --out names a new file" in err
    assert source.read_bytes() == (import_fixture("vainf") / "checkpoint.pth").read_bytes()


def test_printed_commands_quote_a_path_with_spaces(import_fixture, tmp_path: Path, capsys) -> None:
    """Pasted as printed, an unquoted 'my models/vainf.pt' would reach eval.py as two arguments."""
    out = tmp_path / "my models" / "vainf.pt"
    rc, printed, _ = run([str(import_fixture("vainf") / "checkpoint.pth"), "--out", str(out)], capsys)
    assert rc == 0 and f"tools/eval.py --checkpoint '{out}' --data-root" in printed


def tiny(state_dict: dict) -> dict:
    """The same names with one-element tensors: the layout of a big file at no cost."""
    return {name: torch.zeros(1) for name in state_dict}


def vainf_head(import_fixture) -> dict:
    state = torch.load(import_fixture("vainf") / "checkpoint.pth", weights_only=True)["model_state"]
    return {k: v for k, v in state.items() if k.startswith("classifier.")}


def bad_file(case: str, folder: Path, import_fixture) -> tuple[Path, list[str], str]:
    """Write the bad input ``case``; returns the file, extra flags and the words the error must contain."""
    path = folder / f"{case}.pth"
    vainf_file = import_fixture("vainf") / "checkpoint.pth"
    if case == "vainf_resnet101":
        with torch.device("meta"):
            names = {f"backbone.{k}": v for k, v in resnet101().state_dict().items() if not k.startswith("fc.")}
        torch.save({"model_state": {**tiny(names), **vainf_head(import_fixture)}, "cur_itrs": 1}, path)
        return path, [], "a DeepLabV3+ ResNet model from VainF/DeepLabV3Plus-Pytorch; only its DeepLabV3+ MobileNetV2"
    if case == "vainf_hrnet":
        names = ["backbone.conv1.weight", "backbone.layer1.0.conv1.weight", "backbone.transition1.0.0.weight",
                 "backbone.stage4.0.branches.0.0.conv1.weight"]
        torch.save({"model_state": {**tiny(dict.fromkeys(names)), **vainf_head(import_fixture)}}, path)
        return path, [], "a DeepLabV3+ HRNetV2 model from VainF"
    if case == "bubbliiiing_xception":
        state = torch.load(import_fixture("bubbliiiing") / "checkpoint.pth", weights_only=True)
        head = {k: v for k, v in state.items() if not k.startswith("backbone.")}
        torch.save({**tiny(dict.fromkeys(["backbone.conv1.weight", "backbone.block1.skip.weight"])), **head}, path)
        return path, [], "a DeepLabV3+ Xception model from bubbliiiing/deeplabv3-plus-pytorch"
    if case == "classification_model":
        with torch.device("meta"):
            torch.save(tiny(mobilenet_v2().state_dict()), path)
        return path, [], "not a VainF/DeepLabV3Plus-Pytorch DeepLabV3+ MobileNetV2"
    if case == "torchvision_deeplabv3":  # its backbone. and classifier. keys are not VainF's
        with torch.device("meta"):
            torch.save(tiny(deeplabv3_mobilenet_v3_large(weights=None, weights_backbone=None).state_dict()), path)
        return path, [], ("not a VainF/DeepLabV3Plus-Pytorch DeepLabV3+ MobileNetV2 (deeplabv3plus_mobilenet) or a "
                          "bubbliiiing")
    if case == "ours":
        model = DeepLabV3Plus(num_classes=3, width_mult=0.25)
        torch.save({"model": model.state_dict(), "model_config": model.config}, path)
        return path, [], "already a checkpoint of this project"
    if case == "our_bare_state_dict":  # torch.save(model.state_dict()), even through DataParallel
        model = DeepLabV3Plus(num_classes=3, width_mult=0.25)
        torch.save({f"module.{k}": v for k, v in model.state_dict().items()}, path)
        return path, [], "the weights of this project's own DeepLabV3+ without the model_config"
    if case == "truncated":
        path.write_bytes(vainf_file.read_bytes()[:1_000_000])
        return path, [], "not a readable checkpoint"
    if case == "pickled_code":
        class Exploit:
            def __reduce__(self):
                return (Path.touch, (folder / "ran",))
        with open(path, "wb") as f:
            pickle.dump({"model_state": Exploit()}, f, protocol=2)
        return path, [], "loading it could run code; refused"
    ckpt = torch.load(vainf_file, weights_only=True)
    if case == "wrong_shape":  # e.g. a MobileNetV2 of another width
        ckpt["model_state"]["classifier.project.0.weight"] = torch.zeros(48, 16, 1, 1)
        torch.save(ckpt, path)
        return path, [], "tensor for decoder.low_level_project.0.weight has shape [48, 16, 1, 1], but a VainF"
    if case == "too_many_classes":  # class ids 0..255 would not leave 255 for void in 8-bit masks
        for key in ("classifier.classifier.3.weight", "classifier.classifier.3.bias"):
            weights = ckpt["model_state"][key]
            ckpt["model_state"][key] = torch.cat([weights, weights[:1].expand(256 - len(weights), *weights.shape[1:])])
        torch.save(ckpt, path)
        return path, [], "its classifier predicts 256 classes, but masks hold at most 255"
    if case == "no_classifier":
        del ckpt["model_state"]["classifier.classifier.3.weight"]
        torch.save(ckpt, path)
        return path, [], "no classifier found; a VainF/DeepLabV3Plus-Pytorch DeepLabV3+ MobileNetV2"
    if case == "missing_tensor":
        del ckpt["model_state"]["backbone.high_level_features.17.conv.3.running_var"]
        torch.save(ckpt, path)
        return path, [], "missing tensors for backbone.features.17.conv.3.running_var"
    if case == "forced_other_project":
        return vainf_file, ["--from", "bubbliiiing"], "not a bubbliiiing/deeplabv3-plus-pytorch DeepLabV3+ MobileNetV2"
    if case == "num_classes_differ":
        return vainf_file, ["--num-classes", "19"], "predicts 21 classes, not --num-classes 19"
    (folder / "classes.txt").write_text("background\ncat\n")
    return vainf_file, ["--classes", str(folder / "classes.txt")], "predicts 21 classes but --classes names 2"


BAD = ["vainf_resnet101", "vainf_hrnet", "bubbliiiing_xception", "classification_model", "torchvision_deeplabv3",
       "ours", "our_bare_state_dict", "truncated",
       "pickled_code", "wrong_shape", "too_many_classes", "no_classifier", "missing_tensor", "forced_other_project",
       "num_classes_differ", "classes_differ"]


@pytest.mark.parametrize("case", BAD)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(case: str, import_fixture, tmp_path: Path, capsys) -> None:
    path, flags, words = bad_file(case, tmp_path, import_fixture)
    out = tmp_path / "out" / "model.pt"
    rc, printed, err = run([str(path), "--out", str(out), *flags], capsys)
    assert rc == 2 and printed == ""
    assert len(err.strip().splitlines()) == 1 and err.startswith(f"error: {path}: "), err
    assert words in err, err
    assert not out.parent.exists() and not (tmp_path / "ran").exists()


def test_a_classes_file_that_cannot_be_read_names_the_flag(import_fixture, tmp_path: Path, capsys) -> None:
    rc, _, err = run([str(import_fixture("vainf") / "checkpoint.pth"), "--out", str(tmp_path / "model.pt"), "--classes", str(tmp_path)], capsys)
    assert rc == 2 and err == f"error: --classes {tmp_path}: cannot read (Is a directory)\n", err
    assert not (tmp_path / "model.pt").exists()


def project_preprocessing(project: str, image: np.ndarray) -> torch.Tensor:
    """What each project's own predict script feeds its model: VainF ToTensor + Normalize(ImageNet),
    bubbliiiing RGB / 255."""
    if project == "vainf":
        return TF.normalize(TF.to_tensor(image), IMAGENET_MEAN, IMAGENET_STD)[None]
    return torch.from_numpy(image.astype(np.float64) / 255.0).permute(2, 0, 1).float()[None]


def reference_logits(path: Path, batch: torch.Tensor, output_stride: int = 16) -> torch.Tensor:
    """The imported network in eager fp32 (equal to the project's own, see test_fixture_logits) on ``batch``."""
    ckpt = load_checkpoint(path)
    from deeplab.checkpoint import model_from_checkpoint

    model = model_from_checkpoint(ckpt, path, output_stride=output_stride).eval()
    with torch.no_grad():
        return model(batch)


def assert_same_argmax(mask: np.ndarray, logits: torch.Tensor) -> None:
    """Equal class ids wherever the top two logits are not a near tie (engines differ by ~1e-5)."""
    top2 = logits[0].topk(2, dim=0).values
    clear = (top2[0] - top2[1] > 1e-3).numpy()
    expected = logits[0].argmax(0).numpy()
    assert clear.mean() > 0.99
    np.testing.assert_array_equal(mask[clear], expected[clear])


@pytest.mark.parametrize(("project", "engine"), [
    ("vainf", "torch"),  # the quick loop's case; eval's test covers bubbliiiing's normalisation quickly
    pytest.param("bubbliiiing", "torch", marks=pytest.mark.slow),
    pytest.param("vainf", "onnxruntime", marks=pytest.mark.slow),
    pytest.param("bubbliiiing", "onnxruntime", marks=pytest.mark.slow),
])
def test_predict_equals_argmax_after_the_projects_own_preprocessing(project: str, engine: str, imported_checkpoint,
                                                                    voc_mini, tmp_path: Path, capsys) -> None:
    photo = sorted((voc_mini / "VOCdevkit" / "VOC2012" / "JPEGImages").glob("*.jpg"))[0]
    image = np.array(Image.open(photo).convert("RGB").resize((77, 61)))
    Image.fromarray(image).save(tmp_path / "photo.png")
    path = imported_checkpoint(project)
    assert predict.main([str(tmp_path / "photo.png"), "--checkpoint", str(path), "--out", str(tmp_path / "out"),
                         "--engine", engine]) == 0
    mask = np.asarray(Image.open(tmp_path / "out" / "photo_mask.png"))
    assert_same_argmax(mask, reference_logits(path, project_preprocessing(project, image)))


def test_eval_scores_the_imported_model_with_its_own_normalisation(imported_checkpoint, make_voc_folder,
                                                                   tmp_path: Path, capsys) -> None:
    """bubbliiiing's RGB / 255 input differs from the ImageNet default: eval must use the checkpoint's, also at OS8."""
    rng = np.random.default_rng(0)
    masks = {f"img{i}": rng.integers(0, 21, (41 + i, 53)).astype(np.uint8) for i in range(2)}
    base = make_voc_folder(tmp_path / "voc", masks, split="val")
    path = imported_checkpoint("bubbliiiing")
    report = tmp_path / "val.json"
    assert eval_tool.main(["--checkpoint", str(path), "--data-root", str(tmp_path / "voc"), "--engine", "torch",
                           "--workers", "0", "--json", str(report), "--output-stride", "8"]) == 0
    matrix = np.zeros((21, 21), dtype=np.int64)
    for sample_id, target in masks.items():
        image = np.asarray(Image.open(base / "JPEGImages" / f"{sample_id}.jpg").convert("RGB"))
        pred = reference_logits(path, project_preprocessing("bubbliiiing", image), output_stride=8)[0].argmax(0)
        np.add.at(matrix, (target.ravel(), pred.numpy().ravel()), 1)
    tp = np.diag(matrix)
    union = matrix.sum(0) + matrix.sum(1) - tp
    expected = float((tp[union > 0] / union[union > 0]).mean())
    assert json.loads(report.read_text())["miou"] == pytest.approx(expected, abs=1e-3)


@pytest.mark.slow
@pytest.mark.parametrize("project", ["vainf", "bubbliiiing"])
def test_export_and_onnxruntime_agree_with_pytorch(project: str, imported_checkpoint, tmp_path: Path, capsys) -> None:
    out = tmp_path / f"{project}.onnx"
    assert export_tool.main(["--checkpoint", str(imported_checkpoint(project)), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    diff = float(printed.split("max abs logit diff ")[1].split(",")[0])
    agreement = float(printed.split("argmax agreement ")[1].split("%")[0])
    print(printed)
    assert diff < 1e-3 and agreement >= 99.9
