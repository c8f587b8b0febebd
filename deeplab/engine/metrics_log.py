"""Training metrics: a JSON-lines log (one object per optimizer step) and a PNG plot of loss and mIoU."""
from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..checkpoint import write_atomically
from ..errors import UserError, one_line

__all__ = ["MetricsLog", "plot_curves"]


class MetricsLog:
    """Append-only ``metrics.jsonl``: each line a JSON object with at least ``step``; resumable without gaps."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def read(self) -> list[dict[str, Any]]:
        """All records; a line that is none (torn by a crash mid-write, or edited by hand into other JSON) is
        dropped, not fatal: a resume or the plot would otherwise stop on it with a traceback."""
        if not self.path.is_file():
            return []
        records = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and type(record.get("step")) is int:
                records.append(record)
        return records

    def reset(self, *, keep_until: int = 0, history: MetricsLog | None = None) -> None:
        """Keep only records with ``step <= keep_until`` (0: none), so a resumed run rewrites what followed; taken
        from ``history`` when given (the resumed run's log, when it continues in another folder)."""
        kept = "".join(json.dumps(r) + "\n" for r in (history or self).read() if r["step"] <= keep_until)
        write_atomically(self.path, lambda handle: handle.write(kept.encode("utf-8")), what="metrics log")

    def append(self, record: dict[str, Any]) -> None:
        """Add one record (flushed at once, so a killed run keeps what it logged)."""
        with _reported(self.path), self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")


@contextlib.contextmanager
def _reported(path: Path) -> Iterator[None]:
    """A failed write of ``path`` (a full disk) as a UserError naming it; checkpoints written so far stay good."""
    try:
        yield
    except OSError as exc:
        raise UserError(f"{path}: cannot write ({exc.strerror or one_line(exc)})") from None


def plot_curves(records: list[dict[str, Any]], path: str | Path) -> None:
    """Draw training loss (raw and smoothed) and validation mIoU against the step into a PNG at ``path``."""
    # A bare Figure draws without pyplot, so no GUI backend is chosen or switched (a user's notebook keeps its own).
    from matplotlib.figure import Figure

    losses, mious = _series(records, "loss"), _series(records, "miou")
    fig = Figure(figsize=(8, 4.5), dpi=100)
    loss_ax = fig.subplots()
    if losses:
        steps, values = zip(*losses)
        loss_ax.plot(steps, values, color="tab:blue", alpha=0.3, linewidth=0.8)
        loss_ax.plot(steps, _smooth(values), color="tab:blue", label="train loss")
    loss_ax.set_xlabel("step")
    loss_ax.set_ylabel("loss", color="tab:blue")
    miou_ax = loss_ax.twinx()
    if mious:
        steps, values = zip(*mious)
        miou_ax.plot(steps, values, "o-", color="tab:orange", label="val mIoU")
    miou_ax.set_ylabel("val mIoU", color="tab:orange")
    miou_ax.set_ylim(0.0, 1.0)
    loss_ax.set_title("DeepLabV3+ training")
    fig.tight_layout()
    # A run stopped mid-plot keeps the previous picture and leaves no partial file behind.
    write_atomically(path, lambda handle: fig.savefig(handle, format="png"), what="curves plot")


def _series(records: list[dict[str, Any]], key: str) -> list[tuple[int, float]]:
    """``(step, value)`` of the records whose ``key`` is a number (an edited log may hold null or text there)."""
    return [(r["step"], r[key]) for r in records
            if isinstance(r.get(key), (int, float)) and not isinstance(r.get(key), bool)]


def _smooth(values: tuple[float, ...], alpha: float = 0.1) -> list[float]:
    """Exponential moving average, so the trend shows through per-batch noise."""
    out, current = [], values[0]
    for value in values:
        current = (1 - alpha) * current + alpha * value
        out.append(current)
    return out
