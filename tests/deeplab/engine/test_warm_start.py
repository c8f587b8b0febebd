"""Warm starts: every tensor with the same name and shape is copied, the others are reported and left fresh."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from deeplab import build_model, save_checkpoint
from deeplab.engine.warm_start import init_checkpoint_defaults, load_init_weights, load_matching, read_init_checkpoint
from deeplab.errors import UserError


def test_matching_tensors_load_and_a_resized_classifier_stays_fresh(randomise_batchnorm) -> None:
    source = randomise_batchnorm(build_model(num_classes=21, width_mult=0.25))
    target = build_model(num_classes=5, width_mult=0.25)
    fresh_classifier = target.decoder.classifier.weight.detach().clone()
    warm = load_matching(target, source.state_dict())
    ours, theirs = target.state_dict(), source.state_dict()
    assert {name for name, _, _ in warm.reshaped} == {"decoder.classifier.weight", "decoder.classifier.bias"}
    assert set(warm.loaded) == set(ours) - {"decoder.classifier.weight", "decoder.classifier.bias"}
    assert all(torch.equal(ours[name], theirs[name]) for name in warm.loaded)
    assert torch.equal(target.decoder.classifier.weight, fresh_classifier)
    lines = warm.summary("voc.pt")
    assert lines[0] == f"initialised from voc.pt: loaded {len(ours) - 2} of {len(ours)} tensors"
    assert any("[21, 256, 1, 1] in the checkpoint, [5, 256, 1, 1] here" in line for line in lines)


def test_a_classifier_of_other_class_names_stays_fresh_unless_told(randomise_batchnorm) -> None:
    source = randomise_batchnorm(build_model(num_classes=3, width_mult=0.25))
    init = {"model": source.state_dict(), "class_names": ["background", "cat", "dog"]}
    classifier = ["decoder.classifier.weight", "decoder.classifier.bias"]
    swapped = ["background", "dog", "cat"]
    for names, ignore, loads in ((swapped, False, False), (swapped, True, True), (init["class_names"], False, True)):
        target = build_model(num_classes=3, width_mult=0.25)
        fresh = target.decoder.classifier.weight.detach().clone()
        warm = load_init_weights(target, init, names, ignore_class_names=ignore)
        assert torch.equal(target.decoder.classifier.weight, source.decoder.classifier.weight if loads else fresh)
        assert warm.other_classes == ([] if loads else classifier)
        assert torch.equal(target.decoder.low_level_project[0].weight, source.decoder.low_level_project[0].weight)
    total = len(target.state_dict())
    lines = load_init_weights(build_model(num_classes=3, width_mult=0.25), init, swapped).summary("pets.pt")
    assert lines == [f"initialised from pets.pt: loaded {total - 2} of {total} tensors"] + [
        f"  not loaded, the checkpoint's class names are not the data's (re-initialised; --ignore-class-names loads "
        f"it): {name}" for name in classifier]


def test_missing_and_unused_tensors_are_reported() -> None:
    one_conv = build_model(num_classes=3, width_mult=0.25, decoder_convs=1)
    two_convs = build_model(num_classes=3, width_mult=0.25)
    warm = load_matching(two_convs, one_conv.state_dict())
    assert warm.missing and all(name.startswith("decoder.fuse.1.") for name in warm.missing)
    assert not warm.unused and not warm.reshaped
    back = load_matching(one_conv, two_convs.state_dict())
    assert back.unused == warm.missing


def test_init_checkpoint_gives_defaults_and_refuses_another_backbone(tmp_path: Path) -> None:
    model = build_model("mobilenetv3_small", num_classes=3, output_stride=8)
    save_checkpoint({"model": model.state_dict(), "model_config": model.config}, tmp_path / "m.pt")
    assert init_checkpoint_defaults(tmp_path / "m.pt") == {"backbone": "mobilenetv3_small", "output_stride": 8}
    assert read_init_checkpoint(tmp_path / "m.pt", backbone="mobilenetv3_small")["model_config"]["num_classes"] == 3
    with pytest.raises(UserError, match="holds a mobilenetv3_small model but this run uses --backbone mobilenetv2"):
        read_init_checkpoint(tmp_path / "m.pt", backbone="mobilenetv2")


@pytest.mark.parametrize("prefix", ["module.", "_orig_mod."])
def test_weights_of_a_wrapped_model_load_as_eval_reads_them(prefix: str, tmp_path: Path, randomise_batchnorm) -> None:
    source = randomise_batchnorm(build_model(num_classes=3, width_mult=0.25))
    wrapped = {f"{prefix}{name}": tensor for name, tensor in source.state_dict().items()}
    save_checkpoint({"model": wrapped, "model_config": source.config}, tmp_path / "wrapped.pt")
    target = build_model(num_classes=3, width_mult=0.25)
    warm = load_init_weights(target, read_init_checkpoint(tmp_path / "wrapped.pt", backbone="mobilenetv2"),
                             ["background", "cat", "dog"])
    assert len(warm.loaded) == len(source.state_dict()) and not warm.unused
    assert all(torch.equal(target.state_dict()[name], tensor) for name, tensor in source.state_dict().items())
