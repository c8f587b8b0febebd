"""The web app: its handlers against the Predictor, two requests at once through a live server, and the page in a
real headless Chromium (upload, overlay, class table, bad uploads, a clip), with a screenshot."""
from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

gr = pytest.importorskip("gradio", reason="the web app needs Gradio: pip install -e '.[app]'")

from deeplab.app import class_shares  # noqa: E402
from deeplab.app.results import ResultFolders  # noqa: E402
from deeplab.app.web import AppLimits, build_app, launch  # noqa: E402
from deeplab.inference import Predictor, overlay  # noqa: E402
from deeplab.inference.video import probe_video  # noqa: E402

CLASSES = ["background", "aeroplane", "bicycle", "bird", "boat"]


@pytest.fixture(scope="module")
def predictor(tmp_path_factory: pytest.TempPathFactory, make_checkpoint) -> Predictor:
    path = tmp_path_factory.mktemp("ckpt") / "best.pt"
    make_checkpoint(path, CLASSES, num_classes=len(CLASSES), varied=True)
    return Predictor.from_checkpoint(path, device="cpu", engine="onnxruntime")


@pytest.fixture(scope="module")
def photo(voc_mini: Path) -> Path:
    return voc_mini / "VOCdevkit" / "VOC2012" / "JPEGImages" / "sample_0000.jpg"


def write_clip(path: Path, frames: int, size: tuple[int, int] = (64, 48)) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.CAP_OPENCV_MJPEG, cv2.VideoWriter_fourcc(*"MJPG"), 8.0, size)
    rng = np.random.default_rng(0)
    for _ in range(frames):
        writer.write(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
    writer.release()
    return path


def test_image_handler_matches_the_predictor(predictor: Predictor, photo: Path, tmp_path: Path) -> None:
    app = build_app(predictor, checkpoint="best.pt")
    shown, table, mask_path, timing, state = app.segmenter.segment_image(str(photo), 0.4)
    image = np.asarray(Image.open(photo).convert("RGB"))
    mask = predictor.predict(image).mask
    np.testing.assert_array_equal(np.asarray(Image.open(mask_path)), mask)
    assert Path(mask_path).name == "sample_0000_mask.png"
    np.testing.assert_array_equal(shown, overlay(image, mask, alpha=0.4, class_names=CLASSES))
    assert [row[0] for row in table] == [name for name, _, _ in class_shares(mask, CLASSES)]
    assert sum(row[1] for row in table) == pytest.approx(100, abs=0.05) and len(table) > 1
    assert "ms" in timing and "onnxruntime" in timing
    np.testing.assert_array_equal(app.segmenter.redraw(state, 0.9),
                                  overlay(image, mask, alpha=0.9, class_names=CLASSES))
    (tmp_path / "fake.jpg").write_bytes(b"\xff\xd8 not really a JPEG")
    with pytest.raises(gr.Error) as caught:
        app.segmenter.segment_image(str(tmp_path / "fake.jpg"), 0.5)
    assert caught.value.message == "fake.jpg: not an image file (or an unsupported format)"


def test_images_and_clips_too_small_for_the_model_get_a_message(imported_checkpoint, tmp_path: Path) -> None:
    app = build_app(Predictor.from_checkpoint(imported_checkpoint("vainf"), device="cpu", engine="torch"),
                    checkpoint="vainf.pt")
    Image.fromarray(np.zeros((2, 30, 3), np.uint8)).save(tmp_path / "strip.png")
    with pytest.raises(gr.Error) as caught:
        app.segmenter.segment_image(str(tmp_path / "strip.png"), 0.5)
    assert caught.value.message == ("strip.png: 30x2 pixels: too small for this model, which needs at least 3 "
                                    "pixels a side")
    with pytest.raises(gr.Error) as caught:
        app.segmenter.segment_clip(str(write_clip(tmp_path / "tiny.avi", 3, size=(2, 2))), 0.5)
    assert caught.value.message == "tiny.avi: 2x2 pixels: too small for this model, which needs at least 3 pixels a side"


def test_clip_handler_writes_a_browser_video_and_refuses_long_clips(predictor: Predictor, tmp_path: Path) -> None:
    app = build_app(predictor, checkpoint="best.pt", limits=AppLimits(max_video_frames=5))
    video, info = app.segmenter.segment_clip(str(write_clip(tmp_path / "clip.avi", 5)), 0.5)
    assert video.endswith(".webm") and "5 frames" in info and "frames/s" in info and "audio" in info
    capture = cv2.VideoCapture(video)
    assert capture.get(cv2.CAP_PROP_FRAME_COUNT) == 5
    with pytest.raises(gr.Error) as caught:
        app.segmenter.segment_clip(str(write_clip(tmp_path / "clip6.avi", 6)), 0.5)
    assert caught.value.message.startswith("clip6.avi: 6 frames; this tab takes clips of up to 5 frames")
    whole = write_clip(tmp_path / "long.avi", 5).read_bytes()
    (tmp_path / "cut.avi").write_bytes(whole[: len(whole) * 7 // 10])
    with pytest.warns(UserWarning, match=r"cut.avi: frame \d of 5 could not be decoded"):
        video, info = app.segmenter.segment_clip(str(tmp_path / "cut.avi"), 0.5)
    assert 0 < cv2.VideoCapture(video).get(cv2.CAP_PROP_FRAME_COUNT) < 5
    (tmp_path / "text.mp4").write_text("not a video")
    with pytest.raises(gr.Error) as caught:
        app.segmenter.segment_clip(str(tmp_path / "text.mp4"), 0.5)
    assert caught.value.message.startswith("text.mp4: cannot open as a video")


def webm_without_frame_count(path: Path, frames: int) -> Path:
    """A VP8 WebM whose Duration element is voided, as a browser's MediaRecorder leaves it: its header declares no
    frame count."""
    writer = cv2.VideoWriter(str(path), cv2.CAP_FFMPEG, cv2.VideoWriter_fourcc(*"VP80"), 8.0, (64, 48))
    for _ in range(frames):
        writer.write(np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8))
    writer.release()
    data = bytearray(path.read_bytes())
    at = data.index(b"\x44\x89")  # Duration's id; its size byte says how many bytes of float follow
    length = 3 + (data[at + 2] & 0x7F)
    data[at:at + length] = bytes([0xEC, 0x80 | (length - 2)]) + bytes(length - 2)  # a Void element as long
    path.write_bytes(bytes(data))
    assert probe_video(path).frames == 0
    return path


def test_a_clip_that_declares_no_frame_count_is_held_to_the_limit(predictor: Predictor, tmp_path: Path) -> None:
    app = build_app(predictor, checkpoint="best.pt", limits=AppLimits(max_video_frames=5))
    with pytest.raises(gr.Error) as caught:
        app.segmenter.segment_clip(str(webm_without_frame_count(tmp_path / "recording.webm", 6)), 0.5)
    assert caught.value.message.startswith("recording.webm: more than 5 frames; this tab takes clips of up to 5")
    video, info = app.segmenter.segment_clip(str(webm_without_frame_count(tmp_path / "short.webm", 5)), 0.5)
    assert cv2.VideoCapture(video).get(cv2.CAP_PROP_FRAME_COUNT) == 5 and "5 frames" in info


def test_clip_handler_pads_odd_sides_and_refuses_clips_too_small_to_encode(predictor: Predictor,
                                                                           tmp_path: Path) -> None:
    app = build_app(predictor, checkpoint="best.pt")
    video, _ = app.segmenter.segment_clip(str(write_clip(tmp_path / "odd.avi", 2, (17, 33))), 0.5)
    capture = cv2.VideoCapture(video)
    assert (capture.get(cv2.CAP_PROP_FRAME_WIDTH), capture.get(cv2.CAP_PROP_FRAME_HEIGHT)) == (18, 34)
    for width, height in ((64, 1), (2, 2), (4, 4)):
        with pytest.raises(gr.Error) as caught:
            app.segmenter.segment_clip(str(write_clip(tmp_path / f"tiny{width}.avi", 2, (width, height))), 0.5)
        assert caught.value.message.startswith(f"tiny{width}.avi: frames of {width}x{height} pixels are too small "
                                               "to encode"), caught.value.message


def test_every_model_handler_waits_for_the_one_model_call(predictor: Predictor) -> None:
    """Gradio limits each handler on its own unless they share a concurrency group: an image and a clip at once
    would run side by side (and an engine's shared buffers could swap their masks)."""
    app = build_app(predictor, checkpoint="best.pt")
    turns = {fn.api_name: (fn.concurrency_id, fn.concurrency_limit) for fn in app.fns.values()}
    assert turns["segment_image"] == turns["segment_clip"] and turns["segment_clip"][1] == 1
    assert turns["redraw"][0] != turns["segment_image"][0]  # no model: it may run beside a segmentation


def test_results_expire_and_refused_requests_leave_nothing(predictor: Predictor, photo: Path,
                                                           tmp_path: Path) -> None:
    app = build_app(predictor, checkpoint="best.pt", limits=AppLimits(max_video_frames=5))
    first = Path(app.segmenter.segment_image(str(photo), 0.5)[2])
    over_an_hour_ago = time.time() - 3601
    os.utime(first.parent, (over_an_hour_ago, over_an_hour_ago))
    second = Path(app.segmenter.segment_image(str(photo), 0.5)[2])
    assert not first.parent.exists() and second.exists()
    (tmp_path / "text.mp4").write_text("not a video")
    for refused in (write_clip(tmp_path / "long.avi", 6), tmp_path / "text.mp4"):
        with pytest.raises(gr.Error):
            app.segmenter.segment_clip(str(refused), 0.5)
    assert list(app.segmenter.results.root.iterdir()) == [second.parent]


def test_results_expire_on_a_timer_without_requests() -> None:
    results = ResultFolders(keep_s=0.3)
    with results.new() as folder:
        (folder / "mask.png").write_bytes(b"png")
    results.prune_every(0.05)
    time.sleep(0.1)
    assert folder.exists()  # younger than keep_s
    deadline = time.monotonic() + 10
    while folder.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not folder.exists() and results.root.is_dir()


@pytest.fixture
def served(predictor: Predictor):
    """The app on a free port of 127.0.0.1 in this process, with a probe counting concurrent model calls."""
    calls = {"active": 0, "most": 0}
    lock = threading.Lock()
    predict = predictor.predict

    def counted(image, **kwargs):
        with lock:
            calls["active"] += 1
            calls["most"] = max(calls["most"], calls["active"])
        time.sleep(0.3)  # long enough for a second request to arrive meanwhile
        try:
            return predict(image, **kwargs)
        finally:
            with lock:
                calls["active"] -= 1

    predictor.predict = counted
    limits = AppLimits(max_upload_mb=1)
    app = build_app(predictor, checkpoint="best.pt", limits=limits)
    url = launch(app, limits=limits, block=False)
    try:
        yield app, url, calls
    finally:
        app.close()
        del predictor.predict


@pytest.mark.slow
def test_two_uploads_at_once_queue_and_both_finish(served, photo: Path, tmp_path: Path) -> None:
    from gradio_client import Client, handle_file

    app, url, calls = served
    assert url.startswith("http://127.0.0.1:")
    Image.open(photo).crop((0, 0, 200, 150)).save(tmp_path / "crop.png")
    client = Client(url, verbose=False)
    jobs = [client.submit(handle_file(str(path)), 0.5, api_name="/segment_image")
            for path in (photo, tmp_path / "crop.png")]
    results = [job.result(timeout=120) for job in jobs]
    assert calls["most"] == 1  # one model call at a time
    assert f"prune {app.segmenter.results.root}" in {thread.name for thread in threading.enumerate()}
    assert [Path(result[2]).name for result in results] == ["sample_0000_mask.png", "crop_mask.png"]


def chromium_or_skip():
    """Selenium driving Debian's Chromium and ChromeDriver; skipped with the reason when either is missing."""
    webdriver = pytest.importorskip("selenium.webdriver", reason="browser tests need Selenium (pip install selenium)")
    browser, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (browser and driver):
        pytest.skip("browser tests need headless Chromium: apt-get install chromium chromium-driver (.ci/run does)")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = browser  # the system browser: Selenium downloads nothing
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                 "--no-first-run", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--window-size=1400,1000"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(driver), options=options)


@pytest.mark.slow
def test_in_a_real_browser(served, photo: Path, predictor: Predictor, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    app, url, _ = served
    browser = chromium_or_skip()
    wait = WebDriverWait(browser, 120)

    def upload(path: Path, into: str = "#image-input") -> None:
        wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, f"{into} input[type=file]"))
        browser.find_element(By.CSS_SELECTOR, f"{into} input[type=file]").send_keys(str(path))

    def page_says(text: str) -> bool:
        return wait.until(lambda b: text in b.find_element(By.TAG_NAME, "body").text)

    try:
        browser.get(url)
        page_says("engine onnxruntime")
        upload(photo)
        wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, "#overlay img"))
        page_says("inference")
        expected = class_shares(predictor.predict(np.asarray(Image.open(photo).convert("RGB"))).mask, CLASSES)

        def table() -> list[list[str]]:
            """The rows as the page shows them: after the three headers, one line per cell."""
            lines = browser.find_element(By.CSS_SELECTOR, "#class-table").text.splitlines()
            cells = lines[lines.index("colour") + 1 :] if "colour" in lines else []
            return [cells[i : i + 3] for i in range(0, len(cells) - 2, 3)]

        wait.until(lambda b: len(table()) == len(expected) and table()[0][0])
        cells = table()
        assert [row[0] for row in cells] == [name for name, _, _ in expected]
        assert [float(row[1]) for row in cells] == pytest.approx([share for _, share, _ in expected], abs=0.01)
        assert browser.find_elements(By.CSS_SELECTOR, "#mask-file a[download]")
        browser.save_screenshot(str(tmp_path / "app.png"))
        if os.environ.get("DEEPLAB_APP_SCREENSHOT"):  # how the README's picture is made
            shutil.copy(tmp_path / "app.png", os.environ["DEEPLAB_APP_SCREENSHOT"])
        assert Image.open(tmp_path / "app.png").size[0] > 1000

        (tmp_path / "fake.jpg").write_bytes(b"\xff\xd8 not really a JPEG")
        browser.get(url)  # a fresh page: the drop zone holds the last upload
        upload(tmp_path / "fake.jpg")
        page_says("fake.jpg: not an image file")
        Image.fromarray(np.random.default_rng(0).integers(0, 256, (900, 900, 3), dtype=np.uint8)).save(
            tmp_path / "huge.png")
        browser.get(url)
        upload(tmp_path / "huge.png")
        page_says("exceed the maximum allowed size")
        browser.get(url)
        upload(photo)  # the app still serves
        wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, "#overlay img"))

        browser.get(url)
        wait.until(lambda b: b.find_elements(By.XPATH, "//button[@role='tab' and contains(., 'Video')]"))[0].click()
        upload(write_clip(tmp_path / "clip.avi", 4), into="#clip-input")
        browser.find_element(By.XPATH, "//button[contains(., 'Segment clip')]").click()
        page_says("frames/s")
        assert browser.find_elements(By.CSS_SELECTOR, "#clip-overlay video")
    finally:
        browser.quit()
