"""The image encoder (backbone + pixel decoder + the decoder's per-level inputs) as an ONNX graph
run by ONNX Runtime: the predictor's `engine="onnxruntime"`.

The encoder is the per-frame cost and its shapes are fixed for a camera, so it is what gains from
a compiled graph; the prompt decoder stays in torch (prompt counts and kinds vary per call). One
graph per model input size, exported on first use and kept on disk, keyed by the weights, the
input size and the exporter's versions, so a node pays the export (10-25 s) once per camera; in
the node it runs in a child process while torch encodes (`background`).

    python -m seem_ros.inference.onnx_encoder --checkpoint F.pt --input 320x240 --out encoder.onnx

exports one graph by hand (for another runtime: TensorRT, OpenVINO)."""
from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
import subprocess
import sys
import tempfile
import warnings
import weakref
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
    fd, tmp = tempfile.mkstemp(suffix=".onnx.part", dir=path.parent)   # not *.onnx until complete
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
        os.chmod(tmp, 0o644)          # mkstemp's 0600 would hide a shared cache from other users
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


class OnnxImageEncoder:
    """`encode(image [1,3,H,W] float32 0..255) -> ImageFeatures` with ONNX Runtime, a graph per
    input size, exported once and then loaded from the cache.

    With `background=True` (the node) a missing graph is exported, once its size has come twice,
    by a child process at low priority while `encode` returns None, and the caller encodes with
    torch meanwhile: a new image size never stalls the frames (the export takes 9-25 s on a 2-core
    CPU). A size whose export
    fails is reported once and left to torch."""

    def __init__(self, model: SeemModel, threads: Optional[int] = None, directory: Optional[Path] = None,
                 background: bool = False):
        try:
            import onnxruntime  # noqa: F401
        except ImportError as e:
            raise RuntimeError("engine 'onnxruntime' needs the onnxruntime package (pip install onnxruntime)") from e
        self.model = model
        self.threads = threads or torch.get_num_threads()
        self.directory = Path(directory) if directory else cache_dir()
        self.background = background
        self._sessions: Dict[Tuple[int, int], object] = {}
        self._paths: Dict[Tuple[int, int], Path] = {}
        self._exports: Dict[Tuple[int, int], tuple] = {}      # size -> (process, weights file, log file)
        self._reexported: set = set()
        self._sightings: Dict[Tuple[int, int], int] = {}      # encodes of a size without its graph
        self._failed: Dict[Tuple[int, int], str] = {}
        self.notify = log.info          # the node sets its own logger: exports take seconds
        self.warn = log.warning         # ... and failures, which leave a size to torch
        # An export left running when this encoder goes (node shut down, process exit) is ended.
        weakref.finalize(self, _end_exports, self._exports)

    def graph_path(self, size: Tuple[int, int]) -> Path:
        p = self._paths.get(size)
        if p is None:             # digesting the weights takes a while for Focal-L: once per size
            p = self._paths[size] = self.directory / f"seem_encoder_{size[0]}x{size[1]}_{_encoder_key(self.model, size)}.onnx"
        return p

    def failed(self, size: Tuple[int, int]) -> Optional[str]:
        return self._failed.get(size)

    def encode(self, image: Tensor) -> Optional[ImageFeatures]:
        """The features, or None while this input size has no graph (being exported) or cannot
        have one: the caller encodes with torch then."""
        size = tuple(image.shape[-2:])
        s = self._sessions.get(size) or self._prepare(size)
        if s is None:
            return None
        out = s.run(None, {"image": np.ascontiguousarray(image.detach().cpu().numpy(), np.float32)})
        t = [torch.from_numpy(o) for o in out]
        n = (len(t) - 1) // 3
        mf, src, pos, lmf = t[0], t[1:1 + n], t[1 + n:1 + 2 * n], t[1 + 2 * n:]
        return ImageFeatures(mf, src, pos, [tuple(x.shape[-2:]) for x in lmf], lmf)

    def wait(self, timeout: Optional[float] = None) -> None:
        """Until the background exports have ended (tests, benchmarks)."""
        for size, (proc, *_rest) in list(self._exports.items()):
            proc.wait(timeout)
            self._prepare(size)

    def close(self) -> None:
        """Stop background exports (the node's cleanup and shutdown)."""
        _end_exports(self._exports)

    def status(self) -> str:
        """What encodes, for the node's diagnostics."""
        if self._exports:
            return ("onnxruntime (exporting another input size)" if self._sessions
                    else "torch while the onnxruntime graph is exported")
        if self._failed and not self._sessions:
            return "torch (onnxruntime failed: see the log)"
        return "onnxruntime" if self._sessions else "onnxruntime (no frame yet)"

    # -------------------------------------------------------------------------------- internals
    def _fail(self, size, why: str) -> None:
        self._failed[size] = f"ONNX encoder for {size[1]}x{size[0]} model input: {why}; torch encodes that size"
        self.warn(self._failed[size])

    def _prepare(self, size):
        """The session for `size` once its graph is there; otherwise start or check its export."""
        if size in self._failed:
            return None
        path = self.graph_path(size)
        job = self._exports.get(size)
        if job is not None:
            proc, weights, logf = job
            if proc.poll() is None:
                return None
            del self._exports[size]
            err = Path(logf).read_text(errors="replace").strip().splitlines()
            for f in (weights, logf):
                Path(f).unlink(missing_ok=True)
            if proc.returncode != 0 or not path.exists():
                self._fail(size, f"export failed ({err[-1] if err else f'exit code {proc.returncode}'})")
                return None
        if not path.exists():
            if self._exports:         # one export at a time (each holds a model copy); this size later
                return None
            if self.background:
                # A size seen once (a reference image of another aspect ratio) is not worth 10-25 s
                # of a core: a camera's size comes again at once.
                self._sightings[size] = self._sightings.get(size, 0) + 1
                if self._sightings[size] < 2:
                    return None
            return self._export(size, path)
        import onnxruntime as ort
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = self.threads
        opts.log_severity_level = 3
        # Spinning pool threads fight torch's for the cores between runs (2-core CPU: 21 -> 29 ms
        # with a torch resize before each run; 25 ms without spinning).
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            s = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        except Exception as e:        # a damaged cached file: export it again, once
            path.unlink(missing_ok=True)
            if size in self._reexported:
                self._fail(size, f"ONNX Runtime cannot load the exported graph ({type(e).__name__}: {e})")
                return None
            self._reexported.add(size)
            self.warn(f"cached encoder {path} is unreadable ({type(e).__name__}): exporting it again")
            return self._prepare(size)
        self._sessions[size] = s
        self.notify(f"onnxruntime encoder ready for {size[1]}x{size[0]} model input ({path.name})")
        return s

    def _export(self, size, path: Path):
        self.notify(f"exporting the image encoder for {size[1]}x{size[0]} model input to {path}"
                    + (" in the background (torch encodes meanwhile)" if self.background else ""))
        if not self.background:
            try:
                export_image_encoder(self.model, path, size)
            except Exception as e:
                self._fail(size, f"export failed ({type(e).__name__}: {e})")
                return None
            return self._prepare(size)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            fd, weights = tempfile.mkstemp(suffix=".pt", dir=self.directory)
            os.close(fd)
            self.model.save(weights)      # the child rebuilds the model from these
            fd, logf = tempfile.mkstemp(suffix=".log", dir=self.directory)
            cmd = [sys.executable, "-m", __name__, "--checkpoint", weights, "--input", f"{size[1]}x{size[0]}",
                   "--out", str(path), "--nice", "10", "--delete-checkpoint"]
            # Its own session: a Ctrl-C meant for the node does not reach it half-way (close() ends it).
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=fd, stderr=fd, start_new_session=True,
                                    env=dict(os.environ, OMP_NUM_THREADS="1"))
            os.close(fd)
        except Exception as e:
            self._fail(size, f"cannot start the export ({type(e).__name__}: {e})")
            return None
        self._exports[size] = (proc, weights, logf)
        return None


def main(argv=None) -> int:
    """Export the image encoder of a checkpoint for one model input size (the engine's background
    export runs this; also for anyone who wants the graph for another runtime)."""
    import argparse
    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--input", required=True, help="model input WxH (after resizing, before padding)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--nice", type=int, default=0, help="lower this process's priority by this much")
    ap.add_argument("--delete-checkpoint", action="store_true", help="remove --checkpoint once read (a temporary copy)")
    a = ap.parse_args(argv)
    if a.nice:
        os.nice(a.nice)
    torch.set_num_threads(1)
    w, h = (int(v) for v in a.input.lower().split("x"))
    model = SeemModel.from_checkpoint(a.checkpoint).eval()
    if a.delete_checkpoint:
        os.unlink(a.checkpoint)
    export_image_encoder(model, a.out, (h, w))
    return 0


def _end_exports(exports: dict) -> None:
    for proc, weights, logf in exports.values():
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for f in (weights, logf):
            Path(f).unlink(missing_ok=True)
    exports.clear()


__all__ = ["OnnxImageEncoder", "export_image_encoder", "cache_dir"]

if __name__ == "__main__":
    sys.exit(main())
