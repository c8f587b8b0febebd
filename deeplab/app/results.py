"""Where the web app keeps its result files (masks, clips): one folder per request inside a temporary folder that
lives as long as the app. Results older than a bound are deleted on the next request and on a timer, so an idle
app keeps none past the bound either; a failed request leaves nothing,
and SIGTERM (kill, docker stop, systemctl stop) stops the app as Ctrl-C does, so the temporary folder goes too."""
from __future__ import annotations

import shutil
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

__all__ = ["ResultFolders"]


class ResultFolders:
    """A temporary folder of per-request result folders, each deleted ``keep_s`` seconds after it was written."""

    def __init__(self, keep_s: float) -> None:
        self.keep_s = keep_s
        self._files = tempfile.TemporaryDirectory(prefix="deeplab-app-")
        self.root = Path(self._files.name)

    @contextmanager
    def new(self) -> Iterator[Path]:
        """A fresh folder for one request's files, removed again if the request fails; first drops expired ones."""
        self.prune()
        folder = Path(tempfile.mkdtemp(dir=self.root))
        try:
            yield folder
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise

    def prune_every(self, seconds: float) -> None:
        """Also prune every ``seconds``, from a daemon thread that ends with the process."""
        def prune_forever() -> None:
            while True:
                time.sleep(seconds)
                self.prune()

        threading.Thread(target=prune_forever, name=f"prune {self.root}", daemon=True).start()

    def prune(self) -> None:
        """Delete the request folders last written more than ``keep_s`` seconds ago."""
        oldest = time.time() - self.keep_s
        try:
            folders = list(self.root.iterdir())
        except FileNotFoundError:  # the app is exiting and its temporary folder is gone
            return
        for folder in folders:
            try:
                expired = folder.stat().st_mtime < oldest
            except FileNotFoundError:  # deleted meanwhile
                continue
            if expired:
                shutil.rmtree(folder, ignore_errors=True)
