"""Imported checkpoints reproduce the logits each project's own model code computed, at output stride 16 and 8."""
from __future__ import annotations

import pytest
import torch

from deeplab import DeepLabV3Plus, load_checkpoint, model_from_checkpoint
from deeplab.models import config_at_output_stride

# float32 logits of about 10 differ by up to ~1e-4 with the summation order alone (one thread or two, the CPU's
# vector width); a wrong architecture option moves them by whole units.
TOLERANCE = 5e-4


def fixture_io(import_fixture, project: str, output_stride: int) -> dict[str, torch.Tensor]:
    return torch.load(import_fixture(project) / f"io_os{output_stride}.pt", weights_only=True)


@pytest.mark.parametrize("output_stride", [16, 8])
@pytest.mark.parametrize("project", ["vainf", "bubbliiiing"])
def test_import_reproduces_the_projects_logits(project: str, output_stride: int, imported_checkpoint,
                                               import_fixture) -> None:
    path = imported_checkpoint(project)
    model = model_from_checkpoint(load_checkpoint(path), path, output_stride=output_stride).eval()
    io = fixture_io(import_fixture, project, output_stride)
    with torch.no_grad():
        logits = model(io["input"])
    diff = float((logits - io["logits"]).abs().max())
    scale = float(io["logits"].abs().max())
    print(f"{project} OS{output_stride}: max abs logit diff {diff:.3g} (logits up to {scale:.3g})")
    assert logits.shape == io["logits"].shape
    assert diff <= TOLERANCE


# Each option the importer sets is needed: without it the same weights give other logits.
@pytest.mark.slow
@pytest.mark.parametrize(("project", "change"), [
    ("vainf", {"pad_block_input": False}),
    ("vainf", {"dilate_strided_block": True}),
    ("vainf", {"low_level_first": False}),
    ("bubbliiiing", {"align_corners": False}),
    ("bubbliiiing", {"dilate_strided_block": True}),
])
def test_each_architecture_option_matters(project: str, change: dict, imported_checkpoint, import_fixture) -> None:
    ckpt = load_checkpoint(imported_checkpoint(project))
    model = DeepLabV3Plus(**{**config_at_output_stride(ckpt["model_config"], 8), **change}).eval()
    model.load_state_dict(ckpt["model"])
    io = fixture_io(import_fixture, project, 8)
    with torch.no_grad():
        assert float((model(io["input"]) - io["logits"]).abs().max()) > 100 * TOLERANCE
