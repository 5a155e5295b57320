"""Loading SEEM checkpoints: official files (seem_focalt_v1.pt, seem_focall_v1.pt) and our own.

Loads with `weights_only=True` (no code runs from the file), recognises the variant from the keys
and shapes, and refuses to load part of a model: every missing, unexpected and mis-shaped key is
named in the error."""
from __future__ import annotations

import logging
import pickle
import zipfile
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

import torch

from .config import CONFIGS, SeemConfig

log = logging.getLogger(__name__)

# Training-only entries of official checkpoints.
IGNORED_PREFIXES = ("criterion.",)
IGNORED_KEYS = ("dilation_kernel",)


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be loaded; the message says why."""


def read_checkpoint(path: Union[str, Path]) -> Tuple[Dict[str, torch.Tensor], Optional[dict]]:
    """Read a file into (flat state_dict, our stored config or None)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, zipfile.BadZipFile, EOFError, RuntimeError, ValueError, OSError,
            UnicodeDecodeError, AttributeError, TypeError) as e:
        raise CheckpointError(f"{path} is not a readable PyTorch checkpoint (truncated, corrupt or not "
                              f"a weights file): {type(e).__name__}: {str(e).splitlines()[0][:200]}") from None
    config = None
    if isinstance(obj, dict) and isinstance(obj.get("seem_ros_config"), dict):
        config = obj["seem_ros_config"]
    for wrapper in ("model", "state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(wrapper), dict):
            obj = obj[wrapper]
            break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path} holds no state_dict (expected a dict of tensors, bare or under 'model')")
    return normalise_keys(obj), config


def normalise_keys(sd: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Strip a DataParallel `module.` prefix and drop training-only entries."""
    out = {}
    for k, v in sd.items():
        if k.startswith("module."):
            k = k[len("module."):]
        if k.startswith(IGNORED_PREFIXES) or k in IGNORED_KEYS:
            continue
        out[k] = v
    return out


def expected_shapes(cfg: SeemConfig) -> Dict[str, torch.Size]:
    """Parameter names and shapes of a config, built on the meta device (no memory, fast)."""
    from .seem import SeemModel
    with torch.device("meta"):
        model = SeemModel(cfg)
    return {k: v.shape for k, v in model.state_dict().items()}


def compare(sd: Dict[str, torch.Tensor], shapes: Dict[str, torch.Size]) -> Tuple[List[str], List[str], List[str]]:
    missing = sorted(k for k in shapes if k not in sd)
    unexpected = sorted(k for k in sd if k not in shapes)
    misshaped = sorted(f"{k}: file {tuple(sd[k].shape)} vs model {tuple(shapes[k])}"
                       for k in shapes if k in sd and sd[k].shape != shapes[k])
    return missing, unexpected, misshaped


def detect_config(sd: Dict[str, torch.Tensor]) -> Tuple[SeemConfig, Tuple[List[str], List[str], List[str]]]:
    """The known config whose keys and shapes fit best, with the differences that remain."""
    best = None
    for cfg in CONFIGS.values():
        diff = compare(sd, expected_shapes(cfg))
        n = sum(map(len, diff))
        if best is None or n < best[0]:
            best = (n, cfg, diff)
    return best[1], best[2]


def _describe(items: List[str], limit: int = 30) -> str:
    shown = "\n    ".join(items[:limit])
    more = f"\n    ... and {len(items) - limit} more" if len(items) > limit else ""
    return shown + more


def load_model(path: Union[str, Path], config: Optional[SeemConfig] = None):
    """Build the model a checkpoint describes and load it strictly."""
    from .seem import SeemModel, config_from_dict
    sd, stored = read_checkpoint(path)
    if config is None and stored is not None:
        try:
            config = config_from_dict(stored)
        except (KeyError, TypeError) as e:
            raise CheckpointError(f"{path}: stored seem_ros_config is malformed: {e}") from None
    if config is None:
        config, diff = detect_config(sd)
    else:
        diff = compare(sd, expected_shapes(config))
    missing, unexpected, misshaped = diff
    if missing or unexpected or misshaped:
        parts = [f"{path} does not match SEEM config '{config.name}' (closest known variant):"]
        if missing:
            parts.append(f"  {len(missing)} missing keys:\n    {_describe(missing)}")
        if unexpected:
            parts.append(f"  {len(unexpected)} unexpected keys:\n    {_describe(unexpected)}")
        if misshaped:
            parts.append(f"  {len(misshaped)} mis-shaped keys:\n    {_describe(misshaped)}")
        raise CheckpointError("\n".join(parts))
    model = SeemModel(config)
    model.load_state_dict(sd, strict=True)
    bad = [k for k, v in sd.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise CheckpointError(f"{path}: non-finite values in {len(bad)} tensors:\n    {_describe(bad)}")
    log.info("loaded SEEM '%s' from %s (%d tensors)", config.name, path, len(sd))
    return model.eval()
