from os import PathLike
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np
import numpy.typing as npt

__version__: str

class Error(Exception): ...

class Result:
    raw: npt.NDArray[np.float32]
    heatmap: npt.NDArray[np.float32]
    classes: List[int]
    labels: List[str]
    logits: npt.NDArray[np.float32]
    probabilities: npt.NDArray[np.float32]
    layer: str
    method: str
    def __len__(self) -> int: ...

class Explainer:
    def __init__(
        self,
        model: str,
        weights: Optional[Union[str, PathLike]] = None,
        layer: Optional[str] = None,
        method: str = "gradcam",
        device: str = "cpu",
        threads: Optional[int] = None,
        labels: Optional[Union[str, PathLike]] = None,
        eigen_smooth: bool = False,
        aug_smooth: bool = False,
        method_batch: Optional[int] = None,
    ) -> None: ...
    layer: str
    method: str
    labels: List[str]
    kind: str
    input_shape: List[int]
    def layers(self) -> List[Tuple[str, List[int]]]: ...
    def explain(
        self,
        x: npt.NDArray[np.float32],
        target: Union[None, int, str, Sequence[Union[int, str]]] = None,
        batch: int = 8,
    ) -> Result: ...
    def metrics_json(
        self,
        x: npt.NDArray[np.float32],
        heatmap: npt.NDArray[np.float32],
        classes: Sequence[int],
        baseline: str = "zero",
        steps: int = 20,
        seed: int = 0,
    ) -> List[str]: ...
    def explain_signal_json(
        self,
        source: Union[str, PathLike, npt.NDArray[np.float32]],
        rate: Optional[float] = None,
        hop: Optional[float] = None,
        target: Union[None, int, str] = None,
        batch: int = 8,
    ) -> Tuple[List[str], npt.NDArray[np.float32], List[str]]: ...
    def explain_video_json(
        self,
        input: Union[str, PathLike],
        output: Union[str, PathLike],
        batch: int = 8,
        every: int = 1,
        target: Union[None, int, str] = None,
        alpha: float = 0.5,
        progress: bool = False,
    ) -> List[str]: ...

def overlay(
    rgb: npt.NDArray[np.uint8], mask: npt.NDArray[np.float32], colormap: str = "jet", alpha: float = 0.5
) -> npt.NDArray[np.uint8]: ...
def methods() -> List[str]: ...
def has_video() -> bool: ...
