"""VOC loading, custom VOC-format folders and their one-line errors naming the bad file."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from datasets import VOC_CLASSES, DataError, VOCSegmentation, download_voc, load_class_names, save_label_png
from datasets.voc import read_labelmap


def test_voc_mini_samples(voc_mini):
    ds = VOCSegmentation(voc_mini, split="val")
    assert len(ds) == 8 and ds.num_classes == 21 and ds.class_names == list(VOC_CLASSES)
    seen = set()
    for i in range(len(ds)):
        image, mask = ds[i]
        assert image.dtype == np.uint8 and image.shape == (513, 513, 3)
        assert mask.dtype == np.uint8 and mask.shape == (513, 513)
        assert ds.image_path(i).name == f"{ds.ids[i]}.jpg" and ds.mask_path(i).name == f"{ds.ids[i]}.png"
        seen |= set(np.unique(mask).tolist())
    assert 255 in seen and 0 in seen and seen <= set(range(21)) | {255}
    assert len(seen - {0, 255}) >= 3  # several object classes, not all background


def test_custom_folder_with_classes_txt(tmp_path, make_voc_folder):
    mask = np.zeros((20, 30), np.uint8)
    mask[5:10, 5:10], mask[12:, 20:] = 1, 2
    mask[0, :] = 255
    make_voc_folder(tmp_path, {"a": mask, "b": np.full((20, 30), 2, np.uint8)}, classes=["bg", "cat", "dog"])
    ds = VOCSegmentation(tmp_path, split="train")
    assert ds.class_names == ["bg", "cat", "dog"] and ds.num_classes == 3 and ds.ids == ["a", "b"]
    image, got = ds[0]
    assert image.shape == (20, 30, 3) and np.array_equal(got, mask)
    assert VOCSegmentation(tmp_path, class_names=["x"] * 4).num_classes == 4
    with pytest.raises(TypeError, match="class_names: a sequence of names, not 'classes.txt'; read a file"):
        VOCSegmentation(tmp_path, class_names="classes.txt")


def test_load_class_names(tmp_path):
    assert load_class_names(tmp_path) == list(VOC_CLASSES) and VOC_CLASSES[0] == "background"
    with pytest.raises(DataError, match=f"VOC folder not found under data root {tmp_path / 'moved'}"):
        load_class_names(tmp_path / "moved")  # not VOC's 21 classes, which a resume would then refuse
    (tmp_path / "classes.txt").write_text("bg\nroad\n\n")
    assert load_class_names(tmp_path) == ["bg", "road"]
    for bad in ("bg\n\nroad\n", "bg\nbg\n", ""):
        (tmp_path / "classes.txt").write_text(bad)
        with pytest.raises(DataError, match="classes.txt"):
            load_class_names(tmp_path)


def test_a_cvat_export_gives_class_names_and_the_colours_of_its_rgb_masks(tmp_path, make_cvat_folder):
    mask = np.zeros((9, 11), np.uint8)
    mask[2:5, 3:8], mask[6:, :4] = 1, 2
    base = make_cvat_folder(tmp_path, {"a": mask, "b": np.full((9, 11), 2, np.uint8)})
    with Image.open(base / "SegmentationClass" / "a.png") as png:
        assert png.mode == "RGB"
    ds = VOCSegmentation(tmp_path)
    assert ds.class_names == load_class_names(tmp_path) == ["background", "cat", "snow"]
    np.testing.assert_array_equal(ds[0][1], mask)
    assert ds.mask_pixels(1).tolist() == [0, 0, 99]  # all white: the labelmap's snow, not void by its grey value


def test_labelmap_lines_as_datumaro_writes_them(tmp_path):
    (tmp_path / "labelmap.txt").write_text("\ufeff# label:color_rgb:parts:actions\r\nbackground:0,0,0::\r\n\r\n"
                                           "person:192,128,128:head,hand,foot:jumping,running\r\ncar:128,128,128\r\n")
    names, table = read_labelmap(tmp_path / "labelmap.txt")
    assert names == ["background", "person", "car"]
    assert table.colours.tolist() == [[0, 0, 0], [192, 128, 128], [128, 128, 128]] and table.ids.tolist() == [0, 1, 2]


@pytest.mark.parametrize("text, problem", [
    ("background:0,0,0::\ncat\n", "line 2 ('cat') is not name:r,g,b:parts:actions (e.g. cat:255,0,0::)"),
    ("background:0,0,0::\ncat:255,0::\n", "line 2: colour '255,0' of 'cat' is not r,g,b (three whole numbers "
                                          "0..255, e.g. 255,0,0)"),
    ("# label:color_rgb:parts:actions\nbackground:0,0,0::\ncat:256,0,0::\n",
     "line 3: colour '256,0,0' of 'cat' has a component above 255"),
    ("background:0,0,0::\ncat:0,0,0::\n", "line 2: colour (0, 0, 0) of 'cat' is already on line 1; each class "
                                          "needs its own name and colour"),
    ("cat:1,0,0::\n\ncat:2,0,0::\n", "line 3: class name 'cat' is already on line 1; each class needs its own "
                                    "name and colour"),
    ("background:0,0,0::\ncat:1,2,3:a:b:c\n", "line 2 ('cat:1,2,3:a:b:c') is not name:r,g,b:parts:actions"),
    ("# label:color_rgb:parts:actions\n", "lists no classes"),
    ("background:0,0,0::\n", "names one class (background); segmentation needs at least two"),
])
def test_a_bad_labelmap_line_is_one_line_naming_the_file_and_line(text, problem, tmp_path, make_voc_folder):
    make_voc_folder(tmp_path, {"a": np.zeros((4, 4), np.uint8)})
    (tmp_path / "labelmap.txt").write_text(text)
    with pytest.raises(DataError) as exc:
        VOCSegmentation(tmp_path)
    _assert_one_line(exc, f"{tmp_path / 'labelmap.txt'}: {problem}")


@pytest.mark.parametrize("classes, differs", [
    ("background\ncat\n", "names 2 classes but 3 in"),
    ("background\ncat\ndog\n", "names class 2 'dog' but it is 'snow' in"),
])
def test_classes_txt_and_labelmap_txt_that_disagree_are_one_line(classes, differs, tmp_path, make_cvat_folder):
    make_cvat_folder(tmp_path, {"a": np.zeros((4, 4), np.uint8)})
    (tmp_path / "classes.txt").write_text(classes)
    expected = f"{tmp_path / 'classes.txt'}: {differs} {tmp_path / 'labelmap.txt'}; keep one file, or make them agree"
    with pytest.raises(DataError, match=f"^{re.escape(expected)}$"):
        load_class_names(tmp_path)
    (tmp_path / "classes.txt").write_text("background\ncat\nsnow\n")
    assert VOCSegmentation(tmp_path).class_names == ["background", "cat", "snow"]


def test_a_labelmap_inside_the_voc_folder_is_refused_not_left_for_the_voc_palette(tmp_path, make_cvat_folder):
    """CVAT's export unpacked into VOC2012 leaves labelmap.txt there, beside SegmentationClass."""
    base = make_cvat_folder(tmp_path, {"a": np.zeros((4, 4), np.uint8)})
    (tmp_path / "labelmap.txt").rename(base / "labelmap.txt")
    with pytest.raises(DataError) as exc:
        VOCSegmentation(tmp_path)
    _assert_one_line(exc, f"{base / 'labelmap.txt'}: class names and mask colours are read from "
                          f"{tmp_path / 'labelmap.txt'} (beside VOCdevkit), not from here; move the file there")


def test_greyscale_jpeg_becomes_rgb(tmp_path, make_voc_folder):
    base = make_voc_folder(tmp_path, {"g": np.zeros((8, 9), np.uint8)})
    Image.fromarray(np.full((8, 9), 77, np.uint8), mode="L").save(base / "JPEGImages" / "g.jpg")
    image, _ = VOCSegmentation(tmp_path)[0]
    assert image.shape == (8, 9, 3) and abs(int(image.mean()) - 77) <= 1


def _assert_one_line(exc: pytest.ExceptionInfo, *parts: str) -> None:
    message = str(exc.value)
    assert "\n" not in message
    for part in parts:
        assert part in message, (part, message)


def test_missing_folder_and_split(tmp_path, make_voc_folder):
    with pytest.raises(DataError) as exc:
        VOCSegmentation(tmp_path / "nowhere")
    _assert_one_line(exc, str(tmp_path / "nowhere" / "VOCdevkit" / "VOC2012"), "--download", "VOCtrainval")
    make_voc_folder(tmp_path, {"a": np.zeros((4, 4), np.uint8)})
    with pytest.raises(DataError) as exc:
        VOCSegmentation(tmp_path, split="val")
    _assert_one_line(exc, "val.txt: split file not found; the folder holds train: write val.txt (one image id a line) "
                     "or name one of those (--split, --val-split)")
    with pytest.raises(DataError) as exc:
        VOCSegmentation(tmp_path, split="train_aug")
    _assert_one_line(exc, "train_aug.txt", "convert_sbd")


@pytest.mark.parametrize("given", ["train.txt", "VOCdevkit/VOC2012/ImageSets/Segmentation/train.txt",
                                   r"ImageSets\Segmentation\train"])
def test_a_split_given_as_its_file_is_told_to_name_it(tmp_path, make_voc_folder, given):
    base = make_voc_folder(tmp_path, {"a": np.zeros((4, 4), np.uint8)})
    with pytest.raises(DataError) as exc:
        VOCSegmentation(tmp_path, split=given)
    _assert_one_line(exc, f"split file not found; --split and --val-split take a split's name, the stem of its file "
                     f"in {base / 'ImageSets' / 'Segmentation'} (--split train)")


def test_a_data_root_a_level_too_deep_names_the_right_one(tmp_path, make_voc_folder):
    base = make_voc_folder(tmp_path / "mine", {"a": np.zeros((4, 4), np.uint8)})
    for given in (base, base.parent):
        with pytest.raises(DataError) as exc:
            VOCSegmentation(given)
        _assert_one_line(exc, f"VOC folder not found under data root {given}; the data root is the folder holding "
                         f"VOCdevkit: pass --data-root {tmp_path / 'mine'}")
    loose = tmp_path / "loose"  # the folders, with no VOCdevkit/VOC2012 above them
    (loose / "JPEGImages").mkdir(parents=True)
    with pytest.raises(DataError) as exc:
        VOCSegmentation(loose)
    _assert_one_line(exc, f"move JPEGImages, SegmentationClass and ImageSets into {loose / 'VOCdevkit' / 'VOC2012'}")


def test_empty_split(tmp_path, make_voc_folder):
    base = make_voc_folder(tmp_path, {"a": np.zeros((4, 4), np.uint8)})
    (base / "ImageSets" / "Segmentation" / "train.txt").write_text("\n  \n")
    with pytest.raises(DataError) as exc:
        VOCSegmentation(tmp_path)
    _assert_one_line(exc, "train.txt", "empty")


@pytest.mark.parametrize("kind", ["JPEGImages/b.jpg", "SegmentationClass/b.png"])
def test_listed_id_with_missing_file(tmp_path, kind, make_voc_folder):
    base = make_voc_folder(tmp_path, {"a": np.zeros((4, 4), np.uint8), "b": np.zeros((4, 4), np.uint8)})
    (base / kind).unlink()
    with pytest.raises(DataError) as exc:
        VOCSegmentation(tmp_path)
    _assert_one_line(exc, str(base / kind), "missing")


def test_images_of_other_types_are_found_by_their_id(tmp_path, make_voc_folder):
    base = make_voc_folder(tmp_path, {"a": np.zeros((4, 5), np.uint8), "b": np.zeros((4, 5), np.uint8)})
    photo = np.random.default_rng(0).integers(0, 256, (4, 5, 3), dtype=np.uint8)
    (base / "JPEGImages" / "a.jpg").unlink()
    Image.fromarray(photo).save(base / "JPEGImages" / "a.png")
    (base / "JPEGImages" / "b.jpg").rename(base / "JPEGImages" / "b.JPG")  # a camera's name
    dataset = VOCSegmentation(tmp_path)
    assert [dataset.image_path(i).name for i in range(2)] == ["a.png", "b.JPG"]
    assert np.array_equal(dataset[0][0], photo) and dataset[1][0].shape == (4, 5, 3)


def test_ids_listed_with_their_extension_are_told_to_drop_it(tmp_path, make_voc_folder):
    base = make_voc_folder(tmp_path, {"a": np.zeros((4, 4), np.uint8), "b": np.zeros((4, 4), np.uint8)})
    (base / "ImageSets" / "Segmentation" / "train.txt").write_text("a.jpg\nb.jpg\n")
    with pytest.raises(DataError) as exc:
        VOCSegmentation(tmp_path)
    _assert_one_line(exc, f"{base / 'JPEGImages' / 'a.jpg.jpg'}: image file listed in the split is missing (and 1 "
                     "more); list ids without their extension (a, not a.jpg)")


@pytest.mark.parametrize("folder, saved_as, kind, read", [
    ("SegmentationClass", "a.PNG", "mask", "masks are read from PNG files named <id>.png"),
    ("SegmentationClass", "a.jpg", "mask", "masks are read from PNG files named <id>.png"),
    ("JPEGImages", "a.HEIC", "image", "images are read from <id> with one of .jpg, .jpeg, .png, .bmp, .tif, .tiff, "
                                      ".webp, .gif, .ppm, .pgm"),  # an iPhone's photo
])
def test_a_file_of_the_id_that_is_not_read_is_named(tmp_path, make_voc_folder, folder, saved_as, kind, read):
    stored = next((make_voc_folder(tmp_path, {"a": np.zeros((4, 4), np.uint8)}) / folder).iterdir())
    stored.rename(stored.with_name(saved_as))
    expected = (f"{stored.with_suffix('.jpg' if kind == 'image' else '.png')}: {kind} file listed in the split is "
                f"missing; the folder holds {saved_as}, but {read}")
    with pytest.raises(DataError, match=f"^{re.escape(expected)}$"):
        VOCSegmentation(tmp_path)


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


@pytest.mark.parametrize("damage, words", [
    (lambda p: p.write_bytes(b"\xff\xd8\xff" + bytes(range(256)) * 4), "image"),
    (_truncate, "corrupt or truncated image"),
    (lambda p: p.write_text("this is a text file, not a JPEG\n"), "not an image file"),
])
def test_bad_image_file(tmp_path, damage, words, make_voc_folder):
    base = make_voc_folder(tmp_path, {"a": np.ones((64, 64), np.uint8)})
    path = base / "JPEGImages" / "a.jpg"
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(path, quality=95)
    damage(path)
    ds = VOCSegmentation(tmp_path)
    with pytest.raises(DataError) as exc:
        ds[0]
    _assert_one_line(exc, str(path), words)


def test_mask_size_differs_from_image(tmp_path, make_voc_folder):
    base = make_voc_folder(tmp_path, {"a": np.zeros((10, 12), np.uint8)})
    save_label_png(base / "SegmentationClass" / "a.png", np.zeros((10, 13), np.uint8))
    with pytest.raises(DataError) as exc:
        VOCSegmentation(tmp_path)[0]
    _assert_one_line(exc, str(base / "SegmentationClass" / "a.png"), "13x10", "12x10")


def test_bad_label_values(tmp_path, make_voc_folder):
    mask = np.zeros((10, 10), np.uint8)
    mask[0, 0], mask[1, 1], mask[2, 2] = 3, 7, 255
    base = make_voc_folder(tmp_path, {"a": mask}, classes=["bg", "a", "b"])
    with pytest.raises(DataError) as exc:
        VOCSegmentation(tmp_path)[0]
    _assert_one_line(exc, str(base / "SegmentationClass" / "a.png"), "[3, 7]")
    mask[0, 0], mask[1, 1] = 2, 2
    save_label_png(base / "SegmentationClass" / "a.png", mask)
    assert VOCSegmentation(tmp_path)[0][1].max() == 255


def test_colour_mask_outside_the_voc_palette_rejected(tmp_path, make_voc_folder):
    base = make_voc_folder(tmp_path, {"a": np.zeros((6, 6), np.uint8)})
    Image.fromarray(np.full((6, 6, 3), (255, 0, 0), np.uint8)).save(base / "SegmentationClass" / "a.png")
    with pytest.raises(DataError) as exc:
        VOCSegmentation(tmp_path)[0]
    _assert_one_line(exc, "a.png: 1 colour (36 pixels) not in the VOC palette, e.g. RGB (255, 0, 0)")


def test_a_one_bit_mask_reads_as_class_ids_0_and_1(tmp_path, make_voc_folder):
    mask = np.zeros((6, 8), np.uint8)
    mask[1:4, 2:7] = 1
    base = make_voc_folder(tmp_path, {"a": mask}, classes=["background", "object"])
    Image.fromarray(mask.astype(bool)).save(base / "SegmentationClass" / "a.png")  # what many tools write
    dataset = VOCSegmentation(tmp_path)
    assert np.array_equal(dataset[0][1], mask) and dataset[0][1].dtype == np.uint8
    assert dataset.mask_pixels(0).tolist() == [33, 15]


def test_jpeg_mask_rejected_even_when_its_values_are_class_ids(tmp_path, make_voc_folder):
    mask = np.zeros((16, 16), np.uint8)
    mask[4:12, 4:12] = 7
    base = make_voc_folder(tmp_path, {"a": mask})  # VOC's 21 classes: JPEG's smeared edges stay in range
    Image.fromarray(mask, mode="L").save(base / "SegmentationClass" / "a.png", format="JPEG")
    with pytest.raises(DataError) as exc:
        VOCSegmentation(tmp_path)[0]
    _assert_one_line(exc, "a.png", "JPEG", "PNG")


def test_download_failure_is_one_line(tmp_path, monkeypatch):
    import urllib.error

    import torchvision.datasets

    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure\nin name resolution")

    monkeypatch.setattr(torchvision.datasets, "VOCSegmentation", offline)
    with pytest.raises(DataError) as exc:
        download_voc(tmp_path)
    _assert_one_line(exc, "VOCtrainval_11-May-2012.tar", "extract", str(tmp_path))


def test_a_classes_txt_that_is_no_file_is_refused_not_read_as_voc(tmp_path):
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "classes.txt").mkdir()
    (tmp_path / "link").mkdir()
    (tmp_path / "link" / "classes.txt").symlink_to(tmp_path / "moved.txt")
    for root in (tmp_path / "folder", tmp_path / "link"):
        with pytest.raises(DataError, match=rf"^{root / 'classes.txt'}: is not a file; it must list the class names"):
            load_class_names(root)


@pytest.mark.parametrize("inside", ["VOCdevkit", "VOCdevkit/VOC2012"])
def test_a_classes_txt_inside_the_voc_folders_is_refused_not_left_for_voc_classes(inside, tmp_path, make_voc_folder):
    make_voc_folder(tmp_path, {"a": np.ones((8, 8), np.uint8)})
    (tmp_path / inside / "classes.txt").write_text("bg\ncat\n")
    with pytest.raises(DataError) as exc:
        VOCSegmentation(tmp_path)
    _assert_one_line(exc, f"{tmp_path / inside / 'classes.txt'}: class names are read from "
                          f"{tmp_path / 'classes.txt'} (beside VOCdevkit), not from here; move the file there")
    (tmp_path / inside / "classes.txt").rename(tmp_path / "classes.txt")
    assert VOCSegmentation(tmp_path).class_names == ["bg", "cat"]


def test_a_class_appended_after_blank_lines_names_the_blank_line(tmp_path):
    # dog added below the blank lines at the end
    (tmp_path / "classes.txt").write_bytes(b"\xef\xbb\xbfbackground\r\ncat\r\n\r\n\r\ndog\r\n")
    with pytest.raises(DataError) as exc:
        load_class_names(tmp_path)
    _assert_one_line(exc, f"{tmp_path / 'classes.txt'}: line 3 is blank; the file needs one class name on each line "
                          "(line i = class id i), blank lines only at its end")


def test_a_comment_in_classes_txt_is_refused_not_taken_for_a_class(tmp_path):
    (tmp_path / "classes.txt").write_text("background\n# vehicles\ncar\n")
    with pytest.raises(DataError, match=r"classes.txt: line 2 \('# vehicles'\) reads as a comment; .*class id i"):
        load_class_names(tmp_path)


@pytest.mark.parametrize("lines", ["0 background\n1 cat\n2 dog\n", "1: background\n2: cat\n3: dog\n"])
def test_class_names_numbered_with_their_ids_are_refused(lines: str, tmp_path):
    (tmp_path / "classes.txt").write_text(lines)
    first = lines.split("\n")[0]
    with pytest.raises(DataError, match=rf"classes.txt: every line starts with its id \(line 1: '{first}'\)"):
        load_class_names(tmp_path)
    (tmp_path / "classes.txt").write_text("2 wheeler\ncar\n3 wheeler\n")  # names that merely start with a number
    assert load_class_names(tmp_path) == ["2 wheeler", "car", "3 wheeler"]


def test_classes_txt_in_latin1_or_with_one_class_is_one_line(tmp_path):
    (tmp_path / "classes.txt").write_bytes("background\ncaf\xe9\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"classes.txt: not UTF-8 text \(byte 0xe9 at position 14\); save it as UTF-8"):
        load_class_names(tmp_path)
    # One class gives a softmax of 1 everywhere: loss 0 and mIoU 1.0 for any model.
    (tmp_path / "classes.txt").write_text("road\n")
    with pytest.raises(DataError, match="classes.txt: names one class .*at least two"):
        load_class_names(tmp_path)
    (tmp_path / "classes.txt").write_bytes("\ufeffbackground\ncaf\xe9\n".encode("utf-8"))  # Notepad's BOM
    assert load_class_names(tmp_path) == ["background", "caf\xe9"]


def test_split_file_with_a_byte_order_mark(tmp_path, make_voc_folder):
    base = make_voc_folder(tmp_path, {"a": np.zeros((4, 5), np.uint8), "b": np.ones((4, 5), np.uint8)},
                           classes=["bg", "x"])
    split = base / "ImageSets" / "Segmentation" / "train.txt"
    split.write_bytes(b"\xef\xbb\xbfa\r\nb\r\n")
    ds = VOCSegmentation(tmp_path, split="train")
    assert ds.ids == ["a", "b"] and ds.image_path(0).name == "a.jpg"
    split.write_bytes(b"a\n\xe9\n")
    with pytest.raises(DataError, match="train.txt: not UTF-8"):
        VOCSegmentation(tmp_path, split="train")


def test_image_size_is_read_from_the_header_as_displayed(tmp_path, make_voc_folder):
    make_voc_folder(tmp_path, {"wide": np.zeros((4, 7), np.uint8)}, classes=["bg", "x"])
    assert VOCSegmentation(tmp_path).image_size(0) == (4, 7)
    exif = Image.Exif()
    exif[0x0112] = 6  # shown rotated by 90 degrees, as read_rgb returns it
    Image.new("RGB", (7, 4)).save(tmp_path / "rotated.jpg", exif=exif)
    from datasets.image_files import image_size, read_rgb

    assert image_size(tmp_path / "rotated.jpg") == read_rgb(tmp_path / "rotated.jpg").shape[:2] == (7, 4)


def test_a_mask_drawn_on_the_unturned_photo_is_told_why_it_differs(tmp_path, make_voc_folder):
    base = make_voc_folder(tmp_path, {"a": np.zeros((4, 7), np.uint8)}, classes=["bg", "x"])
    exif = Image.Exif()
    exif[0x0112] = 6  # a phone photo stored 7x4, shown 4x7
    Image.new("RGB", (7, 4)).save(base / "JPEGImages" / "a.jpg", exif=exif)
    with pytest.raises(DataError) as exc:
        VOCSegmentation(tmp_path).mask_pixels(0)
    _assert_one_line(exc, "mask is 7x4 but its image a.jpg is 4x7 (WxH); its EXIF orientation turns the photo when "
                     "shown, and masks follow it as shown")
