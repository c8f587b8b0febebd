"""Prepared engines are cached beside the checkpoint (or in the user cache folder): a hit loads without building,
a miss builds once, and a corrupt, foreign or stale entry is rebuilt, never trusted."""
from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from deeplab import save_checkpoint
from deeplab.inference import Predictor, engines, prepared
from deeplab.inference import predictor as predictor_module
from deeplab.inference.cache import MANIFEST, PER_RUN_CALIBRATION, CacheKey, EngineCache

IMAGE = np.random.default_rng(0).integers(0, 256, (33, 47, 3), dtype=np.uint8)


@pytest.fixture
def builds(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Engines whose artefacts were written (exported, converted or calibrated) since the test began."""
    made: list[str] = []
    write = prepared.write_artefacts

    def counting(model, engine, folder, calibration=None):
        made.append(engine)
        write(model, engine, folder, calibration)

    monkeypatch.setattr(prepared, "write_artefacts", counting)
    return made


@pytest.fixture
def user_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    return tmp_path / "xdg" / "deeplab" / "engines"


def entries(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("*/") if (p / MANIFEST).is_file()) if folder.is_dir() else []


def predict(path: Path, engine: str = "onnxruntime", **kwargs) -> np.ndarray:
    return Predictor.from_checkpoint(path, device="cpu", engine=engine, **kwargs).predict(IMAGE).mask


def int8_key(sha: str = "ab", **fields) -> CacheKey:
    return CacheKey(sha * 32, "openvino-int8", "int8", "dynamic", **{"versions": {"openvino": "1"}, "calibration": "c1",
                                                                    **fields})


def store(cache: EngineCache, key: CacheKey) -> Path:
    """Store a stand-in artefact under ``key`` (no export) and return the folder it ended in."""
    with cache.build(key, lambda folder, kept: (folder / "model.xml").write_text(key.entry_name)) as entry:
        return entry


def test_miss_builds_once_then_hits_without_the_model(tmp_path: Path, make_checkpoint, builds, user_cache,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    model = make_checkpoint(tmp_path / "m.pt", num_classes=3)
    # Training saves the normalisation; without it the Predictor would build the model to ask its backbone.
    save_checkpoint({"model": model.state_dict(), "model_config": model.config, "mean": list(model.mean),
                     "std": list(model.std)}, tmp_path / "m.pt")
    first = predict(tmp_path / "m.pt")
    assert builds == ["onnxruntime"]
    [entry] = entries(tmp_path / "m.engines")
    assert entry.name.startswith("onnxruntime-dynamic-") and (entry / "model.onnx").is_file()

    def no_model(*args, **kwargs):
        raise AssertionError("a cache hit must not rebuild the PyTorch model")

    monkeypatch.setattr("deeplab.inference.predictor.model_from_checkpoint", no_model)
    np.testing.assert_array_equal(predict(tmp_path / "m.pt"), first)
    assert builds == ["onnxruntime"] and not user_cache.exists()


@pytest.mark.slow
def test_corrupt_entry_is_rebuilt(tmp_path: Path, make_checkpoint, builds, capsys) -> None:
    make_checkpoint(tmp_path / "m.pt", num_classes=3)
    first = predict(tmp_path / "m.pt")
    [entry] = entries(tmp_path / "m.engines")
    onnx = entry / "model.onnx"
    onnx.write_bytes(onnx.read_bytes()[: onnx.stat().st_size // 2])  # a crash or a full disk midway
    np.testing.assert_array_equal(predict(tmp_path / "m.pt"), first)
    assert builds == ["onnxruntime", "onnxruntime"]
    assert "model.onnx is missing or does not match its recorded hash; rebuilding" in capsys.readouterr().err
    assert entries(tmp_path / "m.engines") == [entry]
    (entry / MANIFEST).write_text("{not json")
    predict(tmp_path / "m.pt")
    assert len(builds) == 3 and json.loads((entry / MANIFEST).read_text())["key"]["engine"] == "onnxruntime"


def test_foreign_manifest_is_not_trusted(tmp_path: Path, make_checkpoint, builds) -> None:
    make_checkpoint(tmp_path / "m.pt", num_classes=3)
    predict(tmp_path / "m.pt")
    [entry] = entries(tmp_path / "m.engines")
    manifest = json.loads((entry / MANIFEST).read_text())
    manifest["key"]["checkpoint_sha256"] = "0" * 64  # e.g. copied over from another checkpoint's cache
    (entry / MANIFEST).write_text(json.dumps(manifest))
    predict(tmp_path / "m.pt")
    assert builds == ["onnxruntime", "onnxruntime"]


@pytest.mark.slow
def test_changed_checkpoint_is_stale_and_its_entry_replaced(tmp_path: Path, make_checkpoint, builds,
                                                             randomise_batchnorm) -> None:
    model = make_checkpoint(tmp_path / "m.pt", num_classes=3)
    predict(tmp_path / "m.pt")
    [old] = entries(tmp_path / "m.engines")
    retrained = randomise_batchnorm(model, seed=7)
    save_checkpoint({"model": retrained.state_dict(), "model_config": retrained.config}, tmp_path / "m.pt")
    mask = predict(tmp_path / "m.pt")
    assert builds == ["onnxruntime", "onnxruntime"]
    [new] = entries(tmp_path / "m.engines")
    assert new != old and not old.exists()
    expected = predict(tmp_path / "m.pt", engine="torch")
    np.testing.assert_array_equal(mask, expected)


@pytest.mark.slow
def test_new_library_version_is_a_miss(tmp_path: Path, make_checkpoint, builds,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    make_checkpoint(tmp_path / "m.pt", num_classes=3)
    predict(tmp_path / "m.pt")
    monkeypatch.setattr(prepared, "artefact_versions", lambda engine: {"torch": "9.9", "onnxruntime": "9.9"})
    predict(tmp_path / "m.pt")
    predict(tmp_path / "m.pt")
    assert builds == ["onnxruntime", "onnxruntime"]
    [entry] = entries(tmp_path / "m.engines")
    assert json.loads((entry / MANIFEST).read_text())["key"]["versions"]["onnxruntime"] == "9.9"


def test_an_update_of_the_model_or_export_code_is_a_miss(tmp_path: Path, make_checkpoint, builds,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    make_checkpoint(tmp_path / "m.pt", num_classes=3)
    predict(tmp_path / "m.pt")
    # e.g. max-pools padded another way: the same checkpoint and libraries, another graph
    monkeypatch.setattr(engines, "code_digest", lambda: "updated")
    predict(tmp_path / "m.pt")
    predict(tmp_path / "m.pt")
    assert builds == ["onnxruntime", "onnxruntime"]
    [entry] = entries(tmp_path / "m.engines")
    assert json.loads((entry / MANIFEST).read_text())["key"]["versions"]["deeplab-code"] == "updated"


@pytest.mark.slow
def test_unwritable_checkpoint_folder_uses_the_user_cache(tmp_path: Path, make_checkpoint, builds,
                                                          user_cache) -> None:
    make_checkpoint(tmp_path / "m.pt", num_classes=3)
    (tmp_path / "m.engines").write_text("a file where the cache folder would go")  # unwritable, even for root
    predict(tmp_path / "m.pt")
    predict(tmp_path / "m.pt")
    assert builds == ["onnxruntime"]
    [checkpoint_folder] = list(user_cache.iterdir())
    assert len(entries(checkpoint_folder)) == 1


@pytest.mark.slow
def test_nothing_writable_still_predicts(tmp_path: Path, make_checkpoint, builds, monkeypatch: pytest.MonkeyPatch,
                                         capsys) -> None:
    make_checkpoint(tmp_path / "m.pt", num_classes=3)
    (tmp_path / "m.engines").write_text("")
    (tmp_path / "xdg").write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    expected = predict(tmp_path / "m.pt", engine="torch")
    np.testing.assert_array_equal(predict(tmp_path / "m.pt"), expected)
    assert "cannot write a prepared-engine cache" in capsys.readouterr().err
    assert not list(tmp_path.glob("**/.tmp-*"))


@pytest.mark.slow
def test_int8_entries_are_keyed_by_their_calibration_images(tmp_path: Path, make_checkpoint, builds) -> None:
    make_checkpoint(tmp_path / "m.pt", num_classes=3)
    for name, seed in (("a.png", 1), ("b.png", 2)):
        Image.fromarray(np.random.default_rng(seed).integers(0, 256, (24, 28, 3), dtype=np.uint8)).save(tmp_path / name)
    predict(tmp_path / "m.pt", engine="int8", calibration=[tmp_path / "a.png"])
    predict(tmp_path / "m.pt", engine="int8", calibration=[tmp_path / "a.png"])
    predict(tmp_path / "m.pt", engine="int8", calibration=[tmp_path / "b.png"])
    assert builds == ["int8", "int8"]


def test_interrupted_build_leaves_no_entry(tmp_path: Path) -> None:
    cache = EngineCache(tmp_path / "m.pt", "ab" * 32)
    key = CacheKey("ab" * 32, "onnxruntime", "f32", "dynamic", {"torch": "1"})

    def crash(folder: Path, kept: bool) -> None:
        (folder / "model.onnx").write_bytes(b"half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        with cache.build(key, crash):
            pass
    assert cache.find(key) is None and list((tmp_path / "m.engines").iterdir()) == []


def test_key_digest_covers_every_field() -> None:
    base = CacheKey("ab" * 32, "openvino-int8", "int8", "dynamic", {"openvino": "1"}, calibration="c1")
    variants = [CacheKey("cd" * 32, "openvino-int8", "int8", "dynamic", {"openvino": "1"}, calibration="c1"),
                CacheKey("ab" * 32, "openvino-int8", "int8", "512x512", {"openvino": "1"}, calibration="c1"),
                CacheKey("ab" * 32, "openvino-int8", "int8", "dynamic", {"openvino": "2"}, calibration="c1"),
                CacheKey("ab" * 32, "openvino-int8", "int8", "dynamic", {"openvino": "1"}, calibration="c2"),
                CacheKey("ab" * 32, "openvino-int8", "int8", "dynamic", {"openvino": "1"}, calibration="c1", format=0),
                CacheKey("ab" * 32, "openvino-int8", "int8", "dynamic", {"openvino": "1"}, calibration="c1",
                         variant="output_stride=8")]
    names = {key.entry_name for key in variants}
    assert len(names) == len(variants) and base.entry_name not in names
    assert all(name.startswith(base.slot) for name in names - {variants[1].entry_name})


def test_checkpoint_replaced_after_loading_caches_the_weights_loaded(tmp_path: Path, make_checkpoint, builds,
                                                                     randomise_batchnorm,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    model = make_checkpoint(tmp_path / "m.pt", num_classes=3, varied=True)
    shutil.copy(tmp_path / "m.pt", tmp_path / "old.pt")
    retrained = randomise_batchnorm(model, seed=7)
    save_checkpoint({"model": retrained.state_dict(), "model_config": retrained.config}, tmp_path / "new.pt")
    old, new = predict(tmp_path / "old.pt"), predict(tmp_path / "new.pt")
    assert (old != new).any()
    load = predictor_module.load_checkpoint

    def load_then_replace(path, **kwargs):  # training saves a better model just after this run read the old one
        ckpt = load(path, **kwargs)
        shutil.copy(tmp_path / "new.pt", tmp_path / "tmp.pt")
        os.replace(tmp_path / "tmp.pt", path)
        return ckpt

    monkeypatch.setattr(predictor_module, "load_checkpoint", load_then_replace)
    np.testing.assert_array_equal(predict(tmp_path / "m.pt"), old)
    [entry] = entries(tmp_path / "m.engines")
    old_sha256 = hashlib.sha256((tmp_path / "old.pt").read_bytes()).hexdigest()
    assert json.loads((entry / MANIFEST).read_text())["key"]["checkpoint_sha256"] == old_sha256
    monkeypatch.setattr(predictor_module, "load_checkpoint", load)
    np.testing.assert_array_equal(predict(tmp_path / "m.pt"), new)


def test_storing_an_entry_removes_only_the_entries_it_outdates(tmp_path: Path) -> None:
    best_pt, best_pth = EngineCache(tmp_path / "best.pt", "ab" * 32), EngineCache(tmp_path / "best.pth", "cd" * 32)
    retrained = store(best_pt, int8_key())
    others = {store(best_pt, int8_key(variant="output_stride=8")), store(best_pt, int8_key(calibration="c2")),
              store(best_pth, int8_key("cd"))}  # another variant, calibration and checkpoint file: all valid
    assert set(entries(tmp_path / "best.engines")) == others | {retrained}
    upgraded = store(best_pt, int8_key("ef"))  # best.pt retrained in place
    assert set(entries(tmp_path / "best.engines")) == others | {upgraded}
    newest = store(best_pt, int8_key("ef", versions={"openvino": "2"}))  # then a new OpenVINO
    assert set(entries(tmp_path / "best.engines")) == others | {newest}
    assert all(best_pt.find(int8_key(**fields)) for fields in ({"variant": "output_stride=8"}, {"calibration": "c2"}))


def test_a_file_or_link_where_an_entry_goes_is_replaced_without_leftovers(tmp_path: Path) -> None:
    cache, key = EngineCache(tmp_path / "m.pt", "ab" * 32), int8_key()
    (tmp_path / "kept").mkdir()
    (tmp_path / "kept" / "x").write_text("a user's file")
    for squatter in ("file", "link"):
        where = tmp_path / "m.engines" / key.entry_name
        where.parent.mkdir(exist_ok=True)
        shutil.rmtree(where, ignore_errors=True)
        where.write_text("") if squatter == "file" else where.symlink_to(tmp_path / "kept")
        assert store(cache, key) == where and where.is_dir() and not where.is_symlink()
        assert [p.name for p in where.parent.iterdir()] == [key.entry_name], squatter  # no trash left behind
    assert (tmp_path / "kept" / "x").read_text() == "a user's file"  # a link's target is never followed


def refuse_to_move(monkeypatch: pytest.MonkeyPatch, folder: Path) -> None:
    """Make ``folder`` unmovable, as another user's entry in a shared folder is (root may move anything)."""
    rename = os.rename

    def guarded(src, dst):
        if Path(src) == folder:
            raise PermissionError(errno.EPERM, "Operation not permitted", str(src))
        rename(src, dst)

    monkeypatch.setattr(os, "rename", guarded)


def test_damaged_entry_that_cannot_be_removed_is_stored_in_the_user_cache(tmp_path: Path, user_cache,
                                                                          monkeypatch: pytest.MonkeyPatch,
                                                                          capsys) -> None:
    cache, key = EngineCache(tmp_path / "m.pt", "ab" * 32), int8_key()
    damaged = store(cache, key)
    (damaged / "model.xml").write_text("damaged")
    refuse_to_move(monkeypatch, damaged)
    assert cache.find(key) is None
    entry = store(cache, key)
    assert entry.parent == user_cache / ("ab" * 8) and damaged.is_dir()
    assert "a damaged entry that cannot be removed; storing the engine elsewhere" in capsys.readouterr().err
    assert cache.find(key) == entry
    assert capsys.readouterr().err.strip() == (f"warning: {damaged}: model.xml is missing or does not match its "
                                               f"recorded hash; using {entry}")


def test_entry_that_cannot_be_placed_serves_this_run_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          capsys) -> None:
    cache, key = EngineCache(tmp_path / "m.pt", "ab" * 32), int8_key()
    damaged = store(cache, key)
    (damaged / "model.xml").write_text("damaged")
    refuse_to_move(monkeypatch, damaged)
    monkeypatch.setattr("deeplab.inference.cache._room_for", lambda entry, key: True)  # damaged meanwhile
    with cache.build(key, lambda folder, kept: (folder / "model.xml").write_text("built")) as folder:
        assert (folder / "model.xml").read_text() == "built"
    assert not folder.exists() and (damaged / "model.xml").read_text() == "damaged"
    assert f"{damaged}: cannot store the engine there; it is not cached" in capsys.readouterr().err


def test_folder_where_a_record_goes_is_passed_over(tmp_path: Path, user_cache, capsys) -> None:
    cache = EngineCache(tmp_path / "m.pt", "ab" * 32)
    (tmp_path / "m.engines" / "auto-x.json").mkdir(parents=True)
    assert cache.write_record("auto-x.json", {"engine": "int8"}) == user_cache / ("ab" * 8) / "auto-x.json"
    assert cache.read_record("auto-x.json") == {"engine": "int8"} and not capsys.readouterr().err


def test_calibration_message_says_whether_the_result_is_kept(tmp_path: Path, make_checkpoint,
                                                             monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    make_checkpoint(tmp_path / "m.pt", num_classes=3)
    Image.fromarray(IMAGE).save(tmp_path / "a.png")
    monkeypatch.setattr(prepared, "write_artefacts",
                        lambda model, engine, folder, batches: (folder / "model.onnx").write_bytes(b"int8"))
    monkeypatch.setattr(prepared, "load_artefacts", lambda engine, folder: lambda batch: torch.zeros(len(batch), 3))
    Predictor.from_checkpoint(tmp_path / "m.pt", device="cpu", engine="int8", calibration=[tmp_path / "a.png"])
    assert "(once: the result is cached)" in capsys.readouterr().err
    Predictor.from_checkpoint(tmp_path / "m.pt", device="cpu", engine="int8", fallback_calibration=[tmp_path / "a.png"])
    assert "from the images to predict (cached for these images only)" in capsys.readouterr().err
    shutil.rmtree(tmp_path / "m.engines")
    (tmp_path / "m.engines").write_text("")  # files where the cache folders would go: unwritable, even for root
    (tmp_path / "xdg").write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    Predictor.from_checkpoint(tmp_path / "m.pt", device="cpu", engine="int8", calibration=[tmp_path / "a.png"])
    assert "(on every run: it cannot be cached)" in capsys.readouterr().err


@pytest.mark.parametrize("full", [["m.engines"], ["m.engines", "xdg"]])
def test_a_full_disk_moves_the_entry_on_instead_of_failing(full: list[str], tmp_path: Path, user_cache,
                                                           capsys) -> None:
    cache, key = EngineCache(tmp_path / "m.pt", "ab" * 32), int8_key()

    def write(folder: Path, kept: bool) -> None:
        (folder / "model.xml").write_text("built")
        if any(tmp_path / name in folder.parents for name in full):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(folder / "model.xml"))

    with cache.build(key, write) as entry:
        assert (entry / "model.xml").read_text() == "built"
    assert cache.find(key) == (None if "xdg" in full else entry)
    assert not list(tmp_path.glob("**/.tmp-*")) and f"{tmp_path / 'm.engines'}: no room" in capsys.readouterr().err


def test_an_engine_calibrated_on_the_images_to_predict_replaces_the_previous_one(
        tmp_path: Path, make_checkpoint, monkeypatch: pytest.MonkeyPatch) -> None:
    make_checkpoint(tmp_path / "m.pt", num_classes=3)
    monkeypatch.setattr(prepared, "write_artefacts",
                        lambda model, engine, folder, batches: (folder / "model.onnx").write_bytes(b"int8"))
    monkeypatch.setattr(prepared, "load_artefacts", lambda engine, folder: lambda batch: torch.zeros(len(batch), 3))
    for name in ("named.png", "a.png", "b.png"):
        Image.fromarray(np.random.default_rng(len(name) + ord(name[0])).integers(0, 256, (24, 28, 3), dtype=np.uint8)
                        ).save(tmp_path / name)
    Predictor.from_checkpoint(tmp_path / "m.pt", device="cpu", engine="int8", calibration=[tmp_path / "named.png"])
    for name in ("a.png", "b.png"):  # one predict.py run per photo, each calibrated on its own
        Predictor.from_checkpoint(tmp_path / "m.pt", device="cpu", engine="int8",
                                  fallback_calibration=[tmp_path / name])
    calibrated = [json.loads((entry / MANIFEST).read_text())["key"]["calibration"]
                  for entry in entries(tmp_path / "m.engines")]
    assert sorted(c.startswith(PER_RUN_CALIBRATION) for c in calibrated) == [False, True]
