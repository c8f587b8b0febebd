"""The importer: exact bias folding, class names and counts, file layouts the projects really write."""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from datasets import VOC_CLASSES
from deeplab.converters import CITYSCAPES_CLASSES, import_checkpoint, write_checkpoint
from deeplab.converters.base import fold_conv_bias
from deeplab.errors import UserError


def test_folding_a_conv_bias_into_batchnorm_is_exact(randomise_batchnorm) -> None:
    biased = randomise_batchnorm(nn.Sequential(nn.Conv2d(4, 6, 3, bias=True), nn.BatchNorm2d(6)))
    with torch.no_grad():
        biased[0].bias.normal_()
    state = dict(biased.state_dict())
    fold_conv_bias(state, "0", "1")
    plain = nn.Sequential(nn.Conv2d(4, 6, 3, bias=False), nn.BatchNorm2d(6)).eval()
    plain.load_state_dict(state, strict=True)
    x = torch.randn(2, 4, 9, 9)
    with torch.no_grad():
        torch.testing.assert_close(plain(x), biased(x), rtol=0, atol=1e-5)


def vainf_state(import_fixture) -> dict:
    return torch.load(import_fixture("vainf") / "checkpoint.pth", weights_only=True)


def test_voc_names_by_default_and_given_names_checked(import_fixture, tmp_path: Path) -> None:
    path = import_fixture("bubbliiiing") / "checkpoint.pth"
    imported = import_checkpoint(path)
    assert imported.project.name == "bubbliiiing" and imported.class_names == list(VOC_CLASSES)
    names = [f"c{i}" for i in range(21)]
    assert import_checkpoint(path, class_names=names, num_classes=21).class_names == names
    with pytest.raises(UserError, match="predicts 21 classes but --classes names 3"):
        import_checkpoint(path, class_names=["a", "b", "c"])
    with pytest.raises(UserError, match="predicts 21 classes, not --num-classes 19"):
        import_checkpoint(path, num_classes=19)
    for kwargs, message in (({"class_names": "classes.txt"}, r"^--classes classes.txt: takes a list of class names"),
                            ({"num_classes": "21"}, r"^--num-classes '21': expected an integer$"),
                            ({"output_stride": 12}, r"^--output-stride 12: choose one of 8, 16, 32$")):
        with pytest.raises(UserError, match=message):  # a name string was counted by its letters: 'names 11'
            import_checkpoint(path, **kwargs)


def test_the_imported_file_is_never_written_over_even_with_overwrite(import_fixture, tmp_path: Path) -> None:
    source = tmp_path / "deeplab_mobilenetv2.pth"
    source.write_bytes((import_fixture("bubbliiiing") / "checkpoint.pth").read_bytes())
    imported = import_checkpoint(source)
    with pytest.raises(UserError, match="is the imported file; --out names a new file to write"):
        write_checkpoint(imported, source, overwrite=True)
    assert source.read_bytes() == (import_fixture("bubbliiiing") / "checkpoint.pth").read_bytes()
    assert write_checkpoint(imported, tmp_path / "ours.pt").is_file()


def test_class_count_comes_from_the_file(import_fixture, tmp_path: Path) -> None:
    """A 19-class VainF file (its Cityscapes model) gets Cityscapes' train-id names and a 19-class model."""
    ckpt = vainf_state(import_fixture)
    for key in ("classifier.classifier.3.weight", "classifier.classifier.3.bias"):
        ckpt["model_state"][key] = ckpt["model_state"][key][:19].clone()
    torch.save(ckpt, tmp_path / "cityscapes.pth")
    imported = import_checkpoint(tmp_path / "cityscapes.pth")
    assert imported.class_names == list(CITYSCAPES_CLASSES)
    assert imported.model_config["num_classes"] == 19
    assert imported.checkpoint["model"]["decoder.classifier.weight"].shape[0] == 19


def test_numpy_scores_and_dataparallel_prefixes_are_read(import_fixture, tmp_path: Path) -> None:
    """VainF stores ``best_score`` as a numpy float; files from numpy 1 name its reconstructor numpy.core...;
    weights saved from DataParallel carry ``module.``."""
    ckpt = vainf_state(import_fixture)
    ckpt["best_score"] = np.float64(0.711)
    ckpt["model_state"] = {f"module.{k}": v for k, v in ckpt["model_state"].items()}
    path = tmp_path / "legacy.pth"
    torch.save(ckpt, path, _use_new_zipfile_serialization=False)
    raw = path.read_bytes()
    if b"numpy._core.multiarray\nscalar" in raw:  # written under numpy 2: rename as numpy 1 wrote it
        path.write_bytes(raw.replace(b"numpy._core.multiarray\nscalar", b"numpy.core.multiarray\nscalar"))
    assert b"numpy.core.multiarray\nscalar" in path.read_bytes()
    imported = import_checkpoint(path)
    assert imported.project.name == "vainf"
    expected = ckpt["model_state"]["module.classifier.classifier.3.weight"]
    assert torch.equal(imported.checkpoint["model"]["decoder.classifier.weight"], expected)


@pytest.mark.parametrize("layout", ["pytorch_tutorial", "empty_state_dict_beside"])
def test_weights_under_the_tutorial_key_or_beside_an_empty_dict_are_found(layout: str, import_fixture,
                                                                         tmp_path: Path) -> None:
    """PyTorch's tutorial saves ``model_state_dict``; a script may also leave an empty dict under a usual key."""
    weights = vainf_state(import_fixture)["model_state"]
    ckpt = ({"epoch": 3, "model_state_dict": weights, "optimizer_state_dict": {"state": {}, "param_groups": []}}
            if layout == "pytorch_tutorial" else {"state_dict": {}, "model": weights})
    torch.save(ckpt, tmp_path / "fine_tuned.pth")
    imported = import_checkpoint(tmp_path / "fine_tuned.pth")
    assert torch.equal(imported.checkpoint["model"]["decoder.classifier.weight"],
                       weights["classifier.classifier.3.weight"])


def test_a_safetensors_file_is_read_whatever_its_name_ends_in(import_fixture, tmp_path: Path) -> None:
    """The hub's format holds the tensors alone; a copy named like the published .pth is told by its content."""
    published = import_fixture("bubbliiiing") / "checkpoint.pth"
    weights = torch.load(published, weights_only=True)
    save_file({name: tensor.contiguous() for name, tensor in weights.items()}, tmp_path / "deeplab_mobilenetv2.pth")
    imported = import_checkpoint(tmp_path / "deeplab_mobilenetv2.pth")
    expected = import_checkpoint(published).checkpoint["model"]
    assert imported.project.name == "bubbliiiing" and imported.checkpoint["model"].keys() == expected.keys()
    assert all(torch.equal(imported.checkpoint["model"][name], tensor) for name, tensor in expected.items())
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes((tmp_path / "deeplab_mobilenetv2.pth").read_bytes()[:100_000])
    with pytest.raises(UserError, match="cut.safetensors: not a readable safetensors file"):
        import_checkpoint(cut)


def test_pickled_code_beside_a_numpy_score_stays_refused(tmp_path: Path) -> None:
    marker = tmp_path / "ran"

    class Exploit:
        def __reduce__(self):
            return (Path.touch, (marker,))

    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        pickle.dump({"best_score": np.float64(0.711), "model_state": {"x": Exploit()}}, f, protocol=2)
    with pytest.raises(UserError, match="evil.pth: not a readable checkpoint.*refused"):
        import_checkpoint(path)
    assert not marker.exists()
