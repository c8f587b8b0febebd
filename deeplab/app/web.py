"""The local web app (Gradio): drop an image, see the overlay with its legend, the share of pixels per class and
the palette mask to download; an opacity slider redraws without running the model again; a tab for short clips.

The model runs one request at a time across both tabs (further uploads wait in Gradio's queue and see their place
in it); uploads above ``max_upload_mb`` are refused by the page, undecodable files get a message, and the app serves
on. Result files are deleted ``keep_results_s`` after they were written (an hour, as Gradio's own copies).
"""
from __future__ import annotations

import time
from contextlib import closing
from dataclasses import dataclass
from itertools import count, islice
from pathlib import Path

import gradio as gr
import numpy as np

from datasets import DataError, read_rgb
from datasets.image_files import save_label_png

from ..errors import UserError
from ..inference import Predictor, overlay
from ..inference.video import VideoError, VideoInfo, probe_video, read_frames, segment_video
from .results import ResultFolders
from .summary import class_shares

__all__ = ["AppLimits", "build_app", "describe", "launch"]

TABLE_HEADERS = ["class", "pixels (%)", "colour"]
#: The Gradio concurrency group of every handler that runs the model: one call at a time across all tabs.
MODEL_GROUP = "model"
#: How often a serving app looks for expired results besides on each request (seconds).
PRUNE_EVERY_S = 300.0


@dataclass(frozen=True)
class AppLimits:
    """What the app accepts: upload size (MiB), frames of a clip, how many requests may wait in the queue; and how
    long result files are kept (seconds)."""

    max_upload_mb: int = 20
    max_video_frames: int = 300
    max_queue: int = 16
    keep_results_s: float = 3600


def describe(predictor: Predictor, checkpoint: str | Path) -> str:
    """One Markdown line: which checkpoint, backbone (and output stride), engine and classes the app runs."""
    config = predictor.model_config
    backbone = f"{config.get('backbone', '?')} (output stride {config.get('output_stride', '?')})"
    return (f"**checkpoint** `{checkpoint}` · **backbone** {backbone} · **engine** {predictor.engine_name} "
            f"on {predictor.device.type} · **{len(predictor.class_names)} classes**")


class _Segmenter:
    """The app's handlers around one predictor; result files go to a folder that lives as long as the app."""

    def __init__(self, predictor: Predictor, limits: AppLimits) -> None:
        self.predictor, self.limits = predictor, limits
        self.results = ResultFolders(limits.keep_results_s)

    def segment_image(self, path: str | None, alpha: float):
        """Overlay, class table, mask file, timing line and the (image, mask) state the slider redraws from."""
        if path is None:
            return None, None, None, "", None
        try:
            image = read_rgb(path)
            self.predictor.check_size(image, path)
        except DataError as exc:
            raise gr.Error(_short(exc, path)) from None
        start = time.perf_counter()
        prediction = self.predictor.predict(image)
        seconds = time.perf_counter() - start
        with self.results.new() as folder:
            mask_path = folder / f"{Path(path).stem}_mask.png"
            save_label_png(mask_path, prediction.mask)
        shares = [[name, round(percent, 2), colour]
                  for name, percent, colour in class_shares(prediction.mask, self.predictor.class_names)]
        height, width = prediction.model_size
        timing = (f"inference **{1000 * seconds:.0f} ms** ({self.predictor.engine_name}, model input "
                  f"{width}x{height}; image {image.shape[1]}x{image.shape[0]})")
        return self.redraw((image, prediction.mask), alpha), shares, str(mask_path), timing, (image, prediction.mask)

    def redraw(self, state: tuple[np.ndarray, np.ndarray] | None, alpha: float) -> np.ndarray | None:
        """The overlay of the last image at opacity ``alpha`` (no model call)."""
        if state is None:
            return None
        image, mask = state
        return overlay(image, mask, alpha=alpha, class_names=self.predictor.class_names)

    def segment_clip(self, path: str | None, alpha: float, progress=gr.Progress()):
        """A WebM overlay (browsers play VP8; odd sides padded by one pixel) of a clip of at most ``max_video_frames``
        frames, and a timing line; a clip too small to encode is refused."""
        if path is None:
            raise gr.Error("upload a clip first")
        start = time.perf_counter()
        with self.results.new() as folder:  # a refused clip leaves no folder behind
            target = folder / f"{Path(path).stem}_overlay.webm"
            frames, info = self._overlay_clip(path, target, alpha, progress)
        seconds = time.perf_counter() - start
        return str(target), (f"{frames} frames, {info.width}x{info.height} at {info.fps:g} fps, in "
                             f"{seconds:.1f} s (**{frames / seconds:.1f} frames/s**); audio is not kept")

    def _overlay_clip(self, path: str, target: Path, alpha: float, progress) -> tuple[int, VideoInfo]:
        """Write the overlay of the clip at ``path`` to ``target``: frames written and the clip's properties."""
        name = Path(path).name
        try:
            info = probe_video(path)
            limit = self.limits.max_video_frames
            total = info.frames or _count_frames(path, most=limit + 1)  # a browser's WebM declares no count
            if total > limit:
                shown = total if info.frames else f"more than {limit}"
                raise gr.Error(f"{name}: {shown} frames; this tab takes clips of up to {limit} frames "
                               "(tools/predict.py segments long videos)")
            done = count(1)
            frames = segment_video(self.predictor, path, target, alpha=alpha, batch_size=self.predictor.batch_size,
                                   on_frame=lambda: progress((next(done), total or None), unit="frames")).frames
        except VideoError as exc:
            if not exc.frames_written:
                raise gr.Error(_short(exc, path)) from None
            frames = exc.frames_written  # a truncated clip: show what was decoded, and say so
            gr.Warning(f"{name}: frame {frames + 1} of {info.frames} could not be decoded (truncated or corrupt "
                       f"file); showing the {frames} frames before it")
        except UserError as exc:
            raise gr.Error(_short(exc, path)) from None
        return frames, info


def _count_frames(path: str, *, most: int) -> int:
    """The frames of the clip at ``path``, decoded and counted up to ``most``: for a clip whose header declares no
    count, so that a long one is refused before the model runs, as one that declares it is."""
    with closing(read_frames(path)) as frames:
        return sum(1 for _ in islice(frames, most))


def build_app(predictor: Predictor, *, checkpoint: str | Path, alpha: float = 0.5,
              limits: AppLimits = AppLimits()) -> gr.Blocks:
    """The Gradio app for ``predictor`` (not started: see :func:`launch`)."""
    segmenter = _Segmenter(predictor, limits)
    with gr.Blocks(title="DeepLabV3+ segmentation", delete_cache=(3600, 3600)) as app:
        gr.Markdown(f"## DeepLabV3+ segmentation\n{describe(predictor, checkpoint)}", elem_id="model-info")
        with gr.Tab("Image"), gr.Row():
            with gr.Column(scale=2):
                # A file drop zone rather than gr.Image: our decoder reads the upload, so a corrupt or foreign file
                # gets its one-line reason in the page instead of Gradio's internal preprocessing error.
                image = gr.File(file_types=["image"], type="filepath", elem_id="image-input",
                                label=f"Image: drop or click (up to {limits.max_upload_mb} MB)")
                timing = gr.Markdown(elem_id="timing")
                table = gr.Dataframe(headers=TABLE_HEADERS, label="Share of pixels per class", interactive=False,
                                     elem_id="class-table")
                mask_file = gr.File(label="Palette mask (PNG; pixel value = class id)", elem_id="mask-file")
            with gr.Column(scale=3):
                shown = gr.Image(label="Overlay", show_label=False, format="png", interactive=False,
                                 elem_id="overlay")
                opacity = gr.Slider(0.0, 1.0, value=alpha, step=0.05, label="Opacity of the class colours",
                                    elem_id="opacity")
            state = gr.State()
            image.change(segmenter.segment_image, [image, opacity], [shown, table, mask_file, timing, state],
                         api_name="segment_image", concurrency_id=MODEL_GROUP, concurrency_limit=1)
            # Redrawing needs no model: it may run beside a segmentation.
            opacity.release(segmenter.redraw, [state, opacity], shown, concurrency_limit=4, api_name="redraw")
        with gr.Tab("Video"):
            with gr.Row():
                clip = gr.Video(sources=["upload"], include_audio=True, elem_id="clip-input",
                                label=f"Short clip (.mp4 .avi .mov .mkv, up to {limits.max_video_frames} frames)")
                clip_out = gr.Video(label="Overlay (audio is not kept)", interactive=False, elem_id="clip-overlay")
            clip_opacity = gr.Slider(0.0, 1.0, value=alpha, step=0.05, label="Opacity of the class colours")
            run = gr.Button("Segment clip", variant="primary")
            clip_info = gr.Markdown(elem_id="clip-info")
            run.click(segmenter.segment_clip, [clip, clip_opacity], [clip_out, clip_info], api_name="segment_clip",
                      concurrency_id=MODEL_GROUP, concurrency_limit=1)
    # One model call at a time across the tabs (Gradio limits each handler on its own unless they share a group):
    # requests queue instead of fighting over the CPU (or GPU) threads and the engine's buffers.
    app.queue(default_concurrency_limit=1, max_size=limits.max_queue)
    app.segmenter = segmenter  # keeps the result folder alive as long as the app
    return app


def launch(app: gr.Blocks, *, host: str = "127.0.0.1", port: int | None = None, limits: AppLimits = AppLimits(),
           block: bool = True) -> str:
    """Serve ``app`` on ``host:port`` (a free port from 7860 when None), pruning its results on a timer too;
    returns its address."""
    app.segmenter.results.prune_every(min(limits.keep_results_s, PRUNE_EVERY_S))
    app.launch(server_name=host, server_port=port, max_file_size=f"{limits.max_upload_mb}mb", show_error=True,
               prevent_thread_lock=not block, inbrowser=False, quiet=not block)
    return app.local_url


def _short(exc: Exception, path: str | Path) -> str:
    """The error's line with the upload's temporary path shortened to its file name."""
    return str(exc).replace(str(path), Path(path).name)
