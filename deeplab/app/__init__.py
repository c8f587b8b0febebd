"""The local web app: :func:`~deeplab.app.web.build_app` and :func:`~deeplab.app.web.launch` (need Gradio:
``pip install -e ".[app]"``) around a :class:`~deeplab.inference.Predictor`; :func:`class_shares` needs no Gradio."""
from __future__ import annotations

from .summary import class_shares

__all__ = ["class_shares"]
