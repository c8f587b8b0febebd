"""Fixtures shared by every test: the checkout and real VOC samples, a BatchNorm randomiser, tiny checkpoints,
VOC-format folders and the demo data made on the fly; deterministic seeds and two CPU threads."""
from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from pathlib import Path
from collections.abc import Iterator
from typing import Callable

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from datasets import ensure_demo_dataset, save_label_png
from deeplab import build_model, save_checkpoint

REPO_ROOT = Path(__file__).resolve().parents[1]
VOC_MINI = REPO_ROOT.parent / "shared" / "data" / "voc_mini"
IMPORT_FIXTURES = REPO_ROOT.parent / "shared" / "fixtures" / "imports"
#: Project name -> folder of its checkpoint-import fixture (random weights saved as the project saves them).
IMPORT_FOLDERS = {"vainf": "vainf_deeplabv3plus_mobilenet", "bubbliiiing": "bubbliiiing_deeplab_mobilenetv2"}

# Tests run tiny tensors: one intra-op thread is as fast, and on a busy runner spinning OpenMP threads slow
# them down ~10x. Subprocesses (tools run as scripts) keep their own default.
torch.set_num_threads(1)
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # albumentations asks PyPI for updates on import


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The checkout under test."""
    return REPO_ROOT


@pytest.fixture(scope="session")
def voc_mini() -> Path:
    """Folder holding ``VOCdevkit/VOC2012`` with eight real VOC val images, their labels and reference predictions."""
    assert (VOC_MINI / "VOCdevkit" / "VOC2012").is_dir(), f"missing {VOC_MINI}"
    return VOC_MINI


def _randomise_batchnorm(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BatchNorm non-trivial statistics and affine terms, so a wrong key mapping or a wrong fold
    changes the outputs; returns the model in eval mode."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.affine and module.track_running_stats:
                n = module.num_features
                module.running_mean.copy_(torch.randn(n, generator=generator) * 0.2)
                module.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
                module.weight.copy_(torch.rand(n, generator=generator) + 0.5)
                module.bias.copy_(torch.randn(n, generator=generator) * 0.1)
    return model.eval()


@pytest.fixture(scope="session")
def randomise_batchnorm() -> Callable[..., nn.Module]:
    """``randomise_batchnorm(model, seed=0) -> model``: random BN statistics and affine terms, eval mode."""
    return _randomise_batchnorm


def _make_checkpoint(path: Path, class_names: list[str] | None = None, *, num_classes: int,
                     width_mult: float = 0.25, varied: bool = False, **config) -> nn.Module:
    """Save a random-weight DeepLabV3+ checkpoint (narrow MobileNetV2 by default: cheap on CPU); returns its model.

    ``varied``: random BatchNorm statistics and a classifier centred on noise images, so masks hold several
    classes that follow the picture (plain random weights give one class everywhere).
    """
    model = build_model(num_classes=num_classes, width_mult=width_mult, **config).eval()
    if varied:
        _randomise_batchnorm(model)
        classifier = model.decoder.classifier
        with torch.no_grad():
            classifier.weight.mul_(30)
            classifier.bias.zero_()
            classifier.bias.sub_(model(torch.randn(4, 3, 64, 64)).mean((0, 2, 3)))
    state = {"model": model.state_dict(), "model_config": model.config}
    if class_names is not None:
        state["class_names"] = list(class_names)
    save_checkpoint(state, path)
    return model


@pytest.fixture(scope="session")
def make_checkpoint() -> Callable[..., nn.Module]:
    """``make_checkpoint(path, class_names=None, *, num_classes, width_mult=0.25, varied=False, **config) -> model``."""
    return _make_checkpoint


def _make_voc_folder(root: Path, masks: dict[str, np.ndarray], split: str = "train",
                     classes: list[str] | None = None) -> Path:
    """Write a VOC-format folder: a random JPEG per mask, the masks as palette PNGs, one split list; returns
    ``VOCdevkit/VOC2012``."""
    base = root / "VOCdevkit" / "VOC2012"
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for sample_id, mask in masks.items():
        image = rng.integers(0, 256, (*mask.shape, 3), dtype=np.uint8)
        Image.fromarray(image).save(base / "JPEGImages" / f"{sample_id}.jpg")
        save_label_png(base / "SegmentationClass" / f"{sample_id}.png", mask)
    (base / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("\n".join(masks) + "\n")
    if classes is not None:
        (root / "classes.txt").write_text("\n".join(classes) + "\n")
    return base


@pytest.fixture(scope="session")
def make_voc_folder() -> Callable[..., Path]:
    """``make_voc_folder(root, {id: mask}, split="train", classes=None) -> VOCdevkit/VOC2012``."""
    return _make_voc_folder


#: Classes and colours of the CVAT export :func:`make_cvat_folder` writes; "snow" is white, a grey colour.
CVAT_LABELMAP = {"background": (0, 0, 0), "cat": (250, 50, 83), "snow": (255, 255, 255)}


def _make_cvat_folder(root: Path, masks: dict[str, np.ndarray], split: str = "train") -> Path:
    """A VOC-format folder as CVAT's "Segmentation mask 1.1" export holds it: ``labelmap.txt`` (its header, then
    ``name:r,g,b::`` lines of :data:`CVAT_LABELMAP`) and the masks (ids 0..2) as RGB PNGs in its colours."""
    base = _make_voc_folder(root, masks, split)
    lines = ["# label:color_rgb:parts:actions", *(f"{name}:{r},{g},{b}::" for name, (r, g, b) in CVAT_LABELMAP.items())]
    (root / "labelmap.txt").write_text("\n".join(lines) + "\n")
    colours = np.array(list(CVAT_LABELMAP.values()), np.uint8)
    for sample_id, mask in masks.items():
        Image.fromarray(colours[mask]).save(base / "SegmentationClass" / f"{sample_id}.png")
    return base


@pytest.fixture(scope="session")
def make_cvat_folder() -> Callable[..., Path]:
    """``make_cvat_folder(root, {id: mask of ids 0..2}, split="train") -> VOCdevkit/VOC2012`` with labelmap.txt."""
    return _make_cvat_folder


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The built-in demo dataset, generated once per session (tests add split files, never change images)."""
    return ensure_demo_dataset(tmp_path_factory.mktemp("demo"))


@pytest.fixture(scope="session")
def import_fixture() -> Callable[[str], Path]:
    """``import_fixture(project) -> folder`` with the project's ``checkpoint.pth``, ``io_os16.pt``, ``io_os8.pt``."""
    assert IMPORT_FIXTURES.is_dir(), f"missing {IMPORT_FIXTURES}"
    return lambda project: IMPORT_FIXTURES / IMPORT_FOLDERS[project]


@pytest.fixture(scope="session")
def imported_checkpoint(tmp_path_factory: pytest.TempPathFactory, import_fixture) -> Callable[[str], Path]:
    """``imported_checkpoint(project) -> path`` of the project's fixture converted to our format (once per session)."""
    from deeplab.converters import import_checkpoint, write_checkpoint

    folder, done = tmp_path_factory.mktemp("imported"), {}

    def get(project: str) -> Path:
        if project not in done:
            imported = import_checkpoint(import_fixture(project) / "checkpoint.pth")
            done[project] = write_checkpoint(imported, folder / f"{project}.pt")
        return done[project]

    return get


def _tmpfs_command(mount: Path, options: str, command: list[str]) -> list[str]:
    """``command`` run in a private mount namespace in which ``mount`` is a fresh tmpfs mounted with ``options``."""
    namespace = ["unshare", "-m"] if os.geteuid() == 0 else ["unshare", "-rm"]  # -r: a user namespace, as root
    return [*namespace, "sh", "-c", f'mount -t tmpfs -o {options} tmpfs "$0" && exec "$@"', str(mount), *command]


@pytest.fixture(scope="session")
def tmpfs_command(tmp_path_factory: pytest.TempPathFactory) -> Callable[[Path, str, list[str]], list[str]]:
    """``tmpfs_command(mount, options, command) -> argv``: run ``command`` with a small (``size=50m``) or read-only
    (``ro``) filesystem at ``mount``, a real full or read-only disk; skipped where mount namespaces are not allowed."""
    probe = tmp_path_factory.mktemp("tmpfs_probe")
    if shutil.which("unshare") is None:
        pytest.skip("needs util-linux unshare to mount a private tmpfs")
    result = subprocess.run(_tmpfs_command(probe, "size=1m", ["true"]), capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a private tmpfs here: {result.stderr.strip()}")
    return _tmpfs_command


@pytest.fixture
def failing_train_step(monkeypatch: pytest.MonkeyPatch) -> Callable[..., contextlib.AbstractContextManager[None]]:
    """``with failing_train_step(n, exc):`` the n-th training step inside the block raises ``exc`` (a crash, a
    Ctrl-C); the real step is back after the block."""
    from deeplab.engine import loop

    @contextlib.contextmanager
    def fail_at(n: int, exc: BaseException | type) -> Iterator[None]:
        real_step, calls = loop.train_step, []

        def step(*args, **kwargs):
            calls.append(1)
            if len(calls) == n:
                raise exc
            return real_step(*args, **kwargs)

        monkeypatch.setattr(loop, "train_step", step)
        try:
            yield
        finally:
            monkeypatch.setattr(loop, "train_step", real_step)

    return fail_at
