"""The image encoder (backbone + pixel decoder + the decoder's per-level inputs) as an ONNX graph
run by ONNX Runtime: the predictor's `engine="onnxruntime"`.

The encoder is the per-frame cost and its shapes are fixed for a camera, so it is what gains from
a compiled graph; the prompt decoder stays in torch (prompt counts and kinds vary per call). One
graph per model input size, exported on first use and kept on disk, keyed by the weights, the
input size and the exporter's versions, so a node pays the export (seconds) once per camera."""
from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
import tempfile
import warnings
from pathlib import Path
from typing import Dict, Optional, Tuple

import numpy as np
import torch
from torch import Tensor

from ..model.decoder import ImageFeatures
from ..model.seem import SeemModel

log = logging.getLogger(__name__)
GRAPH_VERSION = 1      # bump when the graph's inputs or outputs change: old cached files are not reused
OPSET = 18


def cache_dir() -> Path:
    return Path(os.environ.get("SEEM_ROS_CACHE") or Path.home() / ".cache" / "seem_ros") / "onnx"


class _EncoderGraph(torch.nn.Module):
    """encode_image with its ImageFeatures flattened into a tuple of tensors."""

    def __init__(self, model: SeemModel):
        super().__init__()
        self.model = model

    def forward(self, image: Tensor):
        f = self.model.encode_image(image)
        return (f.mask_features, *f.src, *f.pos, *f.level_mask_features)


def _encoder_key(model: SeemModel, size: Tuple[int, int]) -> str:
    """Digest of everything the graph depends on: encoder weights, config, size, versions."""
    import onnxruntime
    h = hashlib.sha256(repr((GRAPH_VERSION, OPSET, size, repr(model.cfg), torch.__version__,
                             onnxruntime.__version__)).encode())
    parts = {"backbone": model.backbone, "pixel_decoder": model.sem_seg_head.pixel_decoder,
             "level_embed": model.decoder.level_embed, "pe_layer": model.decoder.pe_layer}
    for prefix, module in parts.items():
        for name, t in module.state_dict().items():
            h.update(f"{prefix}.{name}{tuple(t.shape)}".encode())
            h.update(t.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()[:20]


def export_image_encoder(model: SeemModel, path: str | Path, size: Tuple[int, int]) -> Path:
    """Export the image encoder for input images of `size` (H, W, before padding) to `path`.
    The model must be float32 on the CPU. Written to a temporary file first, so that a crash or
    a second process never leaves a partial graph where a reader would take it."""
    p = next(model.parameters())
    if p.device.type != "cpu" or p.dtype != torch.float32:
        raise ValueError(f"ONNX export needs the model in float32 on the CPU (it is {p.dtype} on {p.device})")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    x = torch.zeros(1, 3, *size)
    fd, tmp = tempfile.mkstemp(suffix=".onnx", dir=path.parent)
    os.close(fd)
    try:
        # The exporter reports every step, absent optional operators (torchvision) and its own
        # deprecations on stdout, warnings and logging: nothing a node's user can act on.
        with torch.no_grad(), warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            logging.disable(logging.WARNING)
            try:   # dynamo=True: the TorchScript exporter is deprecated
                torch.onnx.export(_EncoderGraph(model).eval(), (x,), tmp, dynamo=True, opset_version=OPSET,
                                  input_names=["image"], external_data=False, verbose=False)
            finally:
                logging.disable(logging.NOTSET)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


class OnnxImageEncoder:
    """`encode(image [1,3,H,W] float32 0..255) -> ImageFeatures` with ONNX Runtime, a graph per
    input size (exported once, then loaded from the cache)."""

    def __init__(self, model: SeemModel, threads: Optional[int] = None, directory: Optional[Path] = None):
        try:
            import onnxruntime  # noqa: F401
        except ImportError as e:
            raise RuntimeError("engine 'onnxruntime' needs the onnxruntime package (pip install onnxruntime)") from e
        self.model = model
        self.threads = threads or torch.get_num_threads()
        self.directory = Path(directory) if directory else cache_dir()
        self._sessions: Dict[Tuple[int, int], object] = {}
        self._failed: Dict[Tuple[int, int], str] = {}
        self.notify = log.info          # the node sets its own logger: an export takes seconds

    def graph_path(self, size: Tuple[int, int]) -> Path:
        return self.directory / f"seem_encoder_{size[0]}x{size[1]}_{_encoder_key(self.model, size)}.onnx"

    def _session(self, size: Tuple[int, int]):
        s = self._sessions.get(size)
        if s is not None:
            return s
        if size in self._failed:      # not again on every frame (an export takes seconds)
            raise RuntimeError(self._failed[size])
        import onnxruntime as ort
        path = self.graph_path(size)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = self.threads
        opts.log_severity_level = 3
        # Spinning pool threads fight torch's for the cores between runs (2-core CPU: 21 -> 29 ms
        # with a torch resize before each run; 25 ms without spinning).
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        for attempt in range(2):
            try:
                if not path.exists():
                    self.notify(f"exporting the image encoder for {size[1]}x{size[0]} model input to {path} "
                                "(once per input size and weights)")
                    export_image_encoder(self.model, path, size)
                s = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
                break
            except Exception as e:    # a damaged cached file: export it again, once
                if attempt or not path.exists():
                    self._failed[size] = f"ONNX encoder for {size[1]}x{size[0]} input ({path}): {type(e).__name__}: {e}"
                    raise RuntimeError(self._failed[size]) from e
                self.notify(f"cached encoder {path} is unreadable ({e}): exporting it again")
                path.unlink(missing_ok=True)
        self._sessions[size] = s
        return s

    def encode(self, image: Tensor) -> ImageFeatures:
        size = tuple(image.shape[-2:])
        s = self._session(size)
        out = s.run(None, {"image": np.ascontiguousarray(image.detach().cpu().numpy(), np.float32)})
        t = [torch.from_numpy(o) for o in out]
        n = (len(t) - 1) // 3
        mf, src, pos, lmf = t[0], t[1:1 + n], t[1 + n:1 + 2 * n], t[1 + 2 * n:]
        return ImageFeatures(mf, src, pos, [tuple(x.shape[-2:]) for x in lmf], lmf)


__all__ = ["OnnxImageEncoder", "export_image_encoder", "cache_dir"]
