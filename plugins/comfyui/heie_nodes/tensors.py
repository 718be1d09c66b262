"""ComfyUI data as arrays: IMAGE is [B,H,W,C] float32 in [0, 1], MASK is [B,H,W], LATENT is a dict
with ``samples`` [B,C,h,w]. Torch tensors and numpy arrays are both accepted; outputs follow the input's
kind, so torch is used only when the host already gave tensors."""

from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np


def is_torch(value: Any) -> bool:
    return type(value).__module__.split(".", 1)[0] == "torch"


def to_numpy(value: Any) -> np.ndarray:
    """A numpy view/copy of an array or tensor (moved to the CPU)."""
    if is_torch(value):
        return value.detach().cpu().numpy()
    return np.asarray(value)


def like(template: Any, array: np.ndarray) -> Any:
    """``array`` as the same kind (torch or numpy) as ``template``; float32."""
    array = np.ascontiguousarray(array, dtype=np.float32)
    if is_torch(template):
        import torch

        return torch.from_numpy(array)
    return array


def batch_size(images: Any) -> int:
    shape = tuple(images.shape)
    if len(shape) != 4:
        raise ValueError(f"expected an IMAGE batch [B,H,W,C], got shape {shape}")
    return int(shape[0])


def select(value: Any, indices: Sequence[int]) -> Any:
    """Rows ``indices`` of a batch (an empty selection keeps the other dimensions)."""
    if is_torch(value):
        import torch

        return value[torch.as_tensor(list(indices), dtype=torch.long, device=value.device)]
    return np.asarray(value)[np.asarray(list(indices), dtype=np.int64)]


def select_mask(mask: Optional[Any], indices: Sequence[int], batch: int) -> Optional[Any]:
    """A MASK kept in step with the images: per-image masks are selected, a shared one is kept."""
    if mask is None:
        return None
    if len(mask.shape) == 2:  # one H×W mask for the whole batch
        return mask
    return select(mask, indices) if int(mask.shape[0]) == batch else mask


def select_latent(latent: Optional[dict[str, Any]], indices: Sequence[int], batch: int) -> Optional[dict[str, Any]]:
    """A LATENT kept in step with the images (samples, and noise_mask/batch_index when per image)."""
    if latent is None:
        return None
    samples = latent["samples"]
    if int(samples.shape[0]) != batch:
        raise ValueError(f"LATENT has {int(samples.shape[0])} samples but IMAGE has {batch} images")
    out = dict(latent)
    out["samples"] = select(samples, indices)
    noise_mask = latent.get("noise_mask")
    if noise_mask is not None and len(noise_mask.shape) >= 3 and int(noise_mask.shape[0]) == batch:
        out["noise_mask"] = select(noise_mask, indices)
    batch_index = latent.get("batch_index")
    if isinstance(batch_index, list) and len(batch_index) == batch:
        out["batch_index"] = [batch_index[i] for i in indices]
    return out
