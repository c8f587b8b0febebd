"""Images and masks on disk: photos decoded as displayed, label PNGs round-trip, errors name the file."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from datasets import DataError, find_images, read_label_png, read_rgb, save_label_png, voc_palette
from datasets.image_files import ColourTable, image_size


def test_read_rgb_scales_16_bit_and_applies_exif(tmp_path: Path) -> None:
    deep = np.arange(29 * 31, dtype=np.uint16).reshape(29, 31) * 70
    Image.fromarray(deep).save(tmp_path / "deep.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    Image.fromarray(np.zeros((30, 40, 3), np.uint8)).save(tmp_path / "rotated.jpg", exif=exif)
    Image.fromarray(np.full((25, 27, 4), 128, np.uint8)).save(tmp_path / "rgba.png")
    got = read_rgb(tmp_path / "deep.png")
    expected = np.rint(deep / 257.0).astype(np.uint8)
    assert got.dtype == np.uint8 and got.shape == (29, 31, 3)
    np.testing.assert_array_equal(got[..., 1], expected)
    assert read_rgb(tmp_path / "rotated.jpg").shape == (40, 30, 3)
    assert read_rgb(tmp_path / "rgba.png").shape == (25, 27, 3)


def test_read_rgb_scales_float_images_in_0_1_to_8_bits(tmp_path: Path) -> None:
    """A float TIFF holding [0, 1] (as image tools write them) keeps its picture instead of turning black."""
    shades = np.linspace(0.0, 1.0, 20 * 30, dtype=np.float32).reshape(20, 30)
    Image.fromarray(shades).save(tmp_path / "float.tiff")
    np.testing.assert_array_equal(read_rgb(tmp_path / "float.tiff")[..., 0], np.rint(shades * 255.0).astype(np.uint8))
    Image.fromarray(shades * 200).save(tmp_path / "float_8bit_range.tiff")
    np.testing.assert_array_equal(read_rgb(tmp_path / "float_8bit_range.tiff")[..., 2],
                                  np.rint(shades * 200).astype(np.uint8))


def test_read_rgb_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="absent.png: no such file"):
        read_rgb(tmp_path / "absent.png")
    (tmp_path / "fake.jpg").write_text("hello")
    with pytest.raises(DataError, match="fake.jpg: not an image"):
        read_rgb(tmp_path / "fake.jpg")
    with pytest.raises(DataError, match="is a folder"):
        read_rgb(tmp_path)


def test_animations_and_multi_page_files_are_refused_but_a_cameras_mpo_photo_is_read(tmp_path: Path) -> None:
    """Reading only the first frame would segment one frame of many without a word."""
    first, second = (Image.fromarray(np.full((12, 16, 3), value, np.uint8)) for value in (40, 200))
    for name in ("clip.gif", "pages.tiff", "clip.webp"):
        first.save(tmp_path / name, save_all=True, append_images=[second])
        with pytest.raises(DataError, match=f"{name}: holds 2 frames"):
            read_rgb(tmp_path / name)
    first.save(tmp_path / "camera.mpo", save_all=True, append_images=[second])  # photo first, then e.g. a depth map
    np.testing.assert_allclose(read_rgb(tmp_path / "camera.mpo"), 40, atol=2)
    first.save(tmp_path / "still.gif")
    assert read_rgb(tmp_path / "still.gif").shape == (12, 16, 3)


def test_images_beyond_pillows_safe_size_are_one_line(tmp_path: Path, monkeypatch) -> None:
    save_label_png(tmp_path / "huge.png", np.zeros((70, 70), np.uint8))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 2000)  # 4900 pixels: over twice the limit, refused by Pillow
    for read in (read_rgb, image_size, lambda path: read_label_png(path, 2)):
        with pytest.raises(DataError, match="huge.png: image too large to decode safely"):
            read(tmp_path / "huge.png")


def test_photos_between_pillows_warning_and_error_limits_read_without_a_word(tmp_path: Path, monkeypatch) -> None:
    """A 100-megapixel camera's photo is over Pillow's warning limit: no "decompression bomb DOS attack" warning."""
    save_label_png(tmp_path / "camera.png", np.zeros((40, 40), np.uint8))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 1600 pixels: over the limit, under twice it
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for read in (read_rgb, image_size, lambda path: read_label_png(path, 2)):
            read(tmp_path / "camera.png")


def test_label_png_keeps_ids_and_uses_the_voc_palette(tmp_path: Path) -> None:
    mask = np.random.default_rng(0).integers(0, 21, (13, 17)).astype(np.uint8)
    mask[0] = 255
    save_label_png(tmp_path / "m.png", mask)
    with Image.open(tmp_path / "m.png") as png:
        assert png.mode == "P"
        assert np.array_equal(np.asarray(png.getpalette(), np.uint8).reshape(-1, 3)[:256], voc_palette())
    np.testing.assert_array_equal(read_label_png(tmp_path / "m.png", 21), mask)
    with pytest.raises(DataError, match=r"m.png: label values \[20\]"):
        read_label_png(tmp_path / "m.png", 20)


def _voc_ids(shape: tuple[int, int] = (13, 17)) -> np.ndarray:
    """VOC class ids with void and car (whose colour, (128, 128, 128), is grey) in them."""
    mask = np.random.default_rng(0).integers(0, 21, shape).astype(np.uint8)
    mask[0], mask[1, :4] = 255, 7
    return mask


def test_masks_of_ids_that_do_not_fit_a_png_are_refused_not_wrapped(tmp_path: Path) -> None:
    """int64 ids were cast to uint8: 300 became class 44, an ignore label of -100 class 156, 2.5 class 2."""
    ids = np.array([[0, 1], [2, 255]])
    save_label_png(tmp_path / "wide.png", ids.astype(np.int64))
    save_label_png(tmp_path / "bool.png", ids > 1)
    assert read_label_png(tmp_path / "wide.png", 3).tolist() == ids.tolist()
    assert read_label_png(tmp_path / "bool.png", 2).tolist() == [[0, 0], [1, 1]]
    for wrong, words in ((ids + 45, r"class ids 45..300 do not fit"), (ids - 101, r"class ids -101..154 do not fit"),
                         (ids + 0.5, "expected integer class ids, got float64")):
        with pytest.raises(ValueError, match=words):
            save_label_png(tmp_path / "wrong.png", wrong)
    assert not (tmp_path / "wrong.png").exists()


def test_an_rgb_mask_in_voc_colours_reads_as_its_palette_pngs_ids(tmp_path: Path) -> None:
    """VOC masks re-saved by OpenCV or an editor, or colourised predictions: the palette's colours as RGB."""
    mask = _voc_ids()
    save_label_png(tmp_path / "palette.png", mask)
    Image.fromarray(voc_palette()[mask]).save(tmp_path / "rgb.png")
    opaque = np.dstack([voc_palette()[mask], np.full(mask.shape, 255, np.uint8)])
    Image.fromarray(opaque).save(tmp_path / "rgba.png")
    expected = read_label_png(tmp_path / "palette.png", 21)
    for name in ("rgb.png", "rgba.png"):
        got = read_label_png(tmp_path / name, 21)
        assert got.dtype == np.uint8 and np.array_equal(got, expected) and np.array_equal(got, mask)
    with pytest.raises(DataError, match=r"rgb.png: label values \[20\]"):  # then checked like any mask
        read_label_png(tmp_path / "rgb.png", 20)


def test_a_colour_mask_resaved_as_a_palette_image_in_another_order_reads_by_its_colours(tmp_path: Path) -> None:
    """Image.quantize() (and editors that save RGB masks as palette PNGs) put the class colours at indices of their
    own choosing: read by index, the ids came out silently wrong."""
    mask = _voc_ids()
    quantized = Image.fromarray(voc_palette()[mask]).quantize()
    quantized.save(tmp_path / "quantized.png")
    indices = np.asarray(quantized)
    assert not np.array_equal(indices, mask)  # the indices are not the ids
    np.testing.assert_array_equal(read_label_png(tmp_path / "quantized.png", 21), mask)
    # A palette that shares one colour among indices, or holds other colours, still gives its indices as ids.
    for palette in ([0, 0, 0] * 256, [value for i in range(256) for value in (i, i, 255 - i)]):
        quantized.putpalette(palette)
        quantized.save(tmp_path / "own.png")
        np.testing.assert_array_equal(read_label_png(tmp_path / "own.png", 256), indices)


def test_greyscale_ids_saved_as_rgb_read_as_their_grey_values(tmp_path: Path) -> None:
    mask = _voc_ids()
    mask[1, :4] = 3
    Image.fromarray(np.repeat(mask[..., None], 3, axis=2)).save(tmp_path / "grey.png")
    np.testing.assert_array_equal(read_label_png(tmp_path / "grey.png", 21), mask)


def test_an_rgb_mask_in_a_tables_colours_takes_its_ids_even_where_they_are_grey(tmp_path: Path) -> None:
    """A labelmap's white class would read as void (255) by its grey value: the table's colours come first."""
    table = ColourTable(np.array([[0, 0, 0], [255, 255, 255], [255, 0, 0]], np.uint8),
                        np.arange(3, dtype=np.uint8), "labelmap.txt's colours")
    mask = np.zeros((6, 7), np.uint8)
    mask[1:3, 2:5], mask[4:, :2] = 1, 2
    colours = table.colours[mask]
    Image.fromarray(colours).save(tmp_path / "cvat.png")
    np.testing.assert_array_equal(read_label_png(tmp_path / "cvat.png", 3, (table,)), mask)
    colours[mask == 2] = 255  # background and white only: every pixel grey
    Image.fromarray(colours).save(tmp_path / "grey_looking.png")
    np.testing.assert_array_equal(read_label_png(tmp_path / "grey_looking.png", 3, (table,)), np.minimum(mask, 1))


def test_colours_outside_the_table_are_one_line_with_counts_and_examples(tmp_path: Path) -> None:
    colours = voc_palette()[_voc_ids()]
    colours[2, :5] = (1, 2, 3)  # an editor's anti-aliased edge, say
    colours[3, :2] = (250, 0, 0)
    colours[4, :1] = (0, 0, 1)
    colours[5, :6] = (1, 2, 3)
    Image.fromarray(colours).save(tmp_path / "odd.png")
    with pytest.raises(DataError) as exc:
        read_label_png(tmp_path / "odd.png", 21)
    assert str(exc.value) == (
        f"{tmp_path / 'odd.png'}: 3 colours (14 pixels) not in the VOC palette, e.g. RGB (1, 2, 3), (250, 0, 0), "
        "(0, 0, 1); a mask is a palette or greyscale PNG of class ids, or RGB in the VOC palette's colours or in those "
        "of labelmap.txt at the data root")


def test_see_through_rgba_and_other_colour_modes_are_refused(tmp_path: Path) -> None:
    colours = np.dstack([voc_palette()[_voc_ids()], np.full((13, 17), 255, np.uint8)])
    colours[0, 0, 3] = 128
    Image.fromarray(colours).save(tmp_path / "rgba.png")
    with pytest.raises(DataError, match=r"rgba.png: mask has 1 transparent or translucent pixels \(mode RGBA\); "
                                        "save it opaque: a mask is a palette or greyscale PNG of class ids"):
        read_label_png(tmp_path / "rgba.png", 21)
    Image.fromarray(_voc_ids()).convert("LA").save(tmp_path / "la.png")
    with pytest.raises(DataError, match="la.png: mask has mode LA; a mask is a palette or greyscale PNG"):
        read_label_png(tmp_path / "la.png", 21)


def test_voc_palette_matches_the_devkit_colours() -> None:
    palette = voc_palette()
    # VOC devkit labelcolormap: background black, aeroplane (1) dark red, person (15) pink-ish, void (255) cream.
    assert palette[0].tolist() == [0, 0, 0] and palette[1].tolist() == [128, 0, 0]
    assert palette[15].tolist() == [192, 128, 128] and palette[255].tolist() == [224, 224, 192]


def test_find_images_lists_folders_and_reports_empty_or_missing_inputs(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    for name in ("b.PNG", "a.jpg", "notes.txt", "._a.jpg"):  # ._a.jpg: macOS's metadata, hidden
        (tmp_path / "in" / name).write_bytes(b"x")
    (tmp_path / "empty").mkdir()
    single = tmp_path / "single.webp"
    single.write_bytes(b"x")
    images, problems = find_images([tmp_path / "in", single, tmp_path / "empty", tmp_path / "nope.jpg"])
    assert images == [tmp_path / "in" / "a.jpg", tmp_path / "in" / "b.PNG", single]
    assert problems == [f"{tmp_path / 'empty'}: folder holds no images", f"{tmp_path / 'nope.jpg'}: no such file or folder"]


def test_find_images_takes_a_single_name_as_one_input(tmp_path: Path) -> None:
    (tmp_path / "a.jpg").write_bytes(b"x")
    assert find_images(str(tmp_path)) == find_images(tmp_path) == ([tmp_path / "a.jpg"], [])
    assert find_images(str(tmp_path / "*.jpg")) == ([tmp_path / "a.jpg"], [])


def test_find_images_names_broken_links_instead_of_skipping_them(tmp_path: Path) -> None:
    """Links into a drive that is not mounted: the photos behind them are missing from the results, so say so."""
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.jpg").write_bytes(b"x")
    (tmp_path / "in" / "b.jpg").symlink_to(tmp_path / "unmounted" / "b.jpg")
    (tmp_path / "in" / "notes.txt").symlink_to(tmp_path / "unmounted" / "notes.txt")  # not an image: not said
    (tmp_path / "gone").mkdir()
    (tmp_path / "gone" / "c.png").symlink_to("c-target.png")
    images, problems = find_images([tmp_path / "in", tmp_path / "in" / "*.jpg", tmp_path / "gone"])
    assert images == [tmp_path / "in" / "a.jpg"] * 2
    assert problems == [f"{tmp_path / 'in' / 'b.jpg'}: broken symbolic link (its target "
                        f"{tmp_path / 'unmounted' / 'b.jpg'} is missing)",
                        f"{tmp_path / 'gone' / 'c.png'}: broken symbolic link (its target c-target.png is missing)"]


def test_find_images_expands_glob_patterns_the_shell_left_alone(tmp_path: Path) -> None:
    for name in ("b.jpg", "a.jpg", "c.png", "[x].jpg"):
        (tmp_path / name).write_bytes(b"x")
    images, problems = find_images([tmp_path / "*.jpg", tmp_path / "[x].jpg", tmp_path / "*.gif"])
    assert images == [tmp_path / "[x].jpg", tmp_path / "a.jpg", tmp_path / "b.jpg", tmp_path / "[x].jpg"]
    assert problems == [f"{tmp_path / '*.gif'}: no file matches this pattern"]
    (tmp_path / "trip" / "day2").mkdir(parents=True)
    (tmp_path / "trip" / "day2" / "d.jpg").write_bytes(b"x")
    assert find_images([tmp_path / "**" / "d.jpg"]) == ([tmp_path / "trip" / "day2" / "d.jpg"], [])
