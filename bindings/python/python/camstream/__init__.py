"""camstream: Grad-CAM and its family for CNNs on pictures, videos and 1D signals.

numpy in, CAMs out, computed by camstream's Rust core: no torch at run time. Models come
as ONNX (either torch exporter), a built-in architecture with safetensors/PyTorch weights,
or a camstream TOML config.

    import camstream
    ex = camstream.Explainer("model.onnx")          # or "resnet18", weights="r18.pth"
    r = ex.explain(x)                               # x: float32 (N,C,H,W) or (N,C,L)
    r.heatmap, r.labels, r.probabilities
    picture = camstream.overlay(rgb_uint8, r.heatmap[0])
"""
from __future__ import annotations

import json
from os import PathLike
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np

from ._camstream import Error, Result, __version__, has_video, methods, overlay
from ._camstream import Explainer as _Explainer

__all__ = ["Explainer", "Result", "Error", "overlay", "methods", "has_video", "__version__"]

Target = Union[None, int, str, Sequence[Union[int, str]]]


class Explainer(_Explainer):
    """A model cut at its target layer(s), explaining with one CAM method.

    Explainer(model, weights=None, layer=None, method="gradcam", device="cpu",
              threads=None, labels=None, eigen_smooth=False, aug_smooth=False,
              method_batch=None)

    `model`: an .onnx file, a .toml config or a built-in name (resnet18, resnet34,
    resnet50, efficientnet_lite0, yamnet; built-ins need `weights`). `layer`: a target
    layer (see `layers()`), several comma-separated, or the model's default. `method`:
    one of `camstream.methods()`. One Explainer may be used from several threads.
    """

    def explain(self, x: np.ndarray, target: Target = None, batch: int = 8) -> Result:
        """Explains `x`, float32 (N,C,H,W) or (N,C,L) as the model takes it.

        `target`: None (each sample's top-1), a class index or label, or one per sample.
        """
        if isinstance(target, tuple):
            target = list(target)
        return super().explain(x, target, batch)

    def metrics(
        self,
        x: np.ndarray,
        result: Optional[Result] = None,
        *,
        heatmap: Optional[np.ndarray] = None,
        classes: Optional[Sequence[int]] = None,
        baseline: str = "zero",
        steps: int = 20,
        seed: int = 0,
    ) -> List[Dict[str, Any]]:
        """Faithfulness of each map for its class (one dict per sample): pytorch-grad-cam's
        confidence change and ROAD, torchcam's average drop/increase, RISE's
        deletion/insertion, each also for a random map. Give the `result` of
        `explain(x)`, or `heatmap` and `classes`."""
        if result is not None:
            heatmap, classes = result.heatmap, result.classes
        if heatmap is None or classes is None:
            raise Error("metrics needs the result of explain(x), or heatmap and classes")
        lines = self.metrics_json(x, np.asarray(heatmap, dtype=np.float32), list(classes), baseline, steps, seed)
        return [json.loads(line) for line in lines]

    def explain_video(
        self,
        input: Union[str, PathLike],
        output: Union[str, PathLike],
        batch: int = 8,
        every: int = 1,
        target: Union[None, int, str] = None,
        alpha: float = 0.5,
        progress: bool = False,
    ) -> List[Dict[str, Any]]:
        """Annotates a video file into `output` (.mp4/.mkv/.mov, H.264) in constant
        memory and returns one record per frame (index, seconds, class, label,
        probability, peak). Needs a build with video support (`camstream.has_video()`)."""
        lines = self.explain_video_json(input, output, batch, every, target, alpha, progress)
        return [json.loads(line) for line in lines]

    def explain_signal(
        self,
        source: Union[str, PathLike, np.ndarray],
        rate: Optional[float] = None,
        hop: Optional[float] = None,
        target: Union[None, int, str] = None,
        batch: int = 8,
    ) -> Dict[str, Any]:
        """Explains a recording window by window: a file (WAV, CSV, WFDB, .npy) or a
        float32 array (L,) or (C,L) with its `rate` in Hz. `hop`: seconds between windows
        (default: the window). Returns {"windows": [records], "relevance": array over the
        input's samples, "notes": [...]}."""
        if isinstance(source, np.ndarray):
            source = np.ascontiguousarray(source, dtype=np.float32)
        lines, relevance, notes = self.explain_signal_json(source, rate, hop, target, batch)
        return {"windows": [json.loads(line) for line in lines], "relevance": relevance, "notes": notes}
