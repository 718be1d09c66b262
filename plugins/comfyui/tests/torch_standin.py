"""A stand-in for the torch calls the node pack makes (``heie_nodes/tensors.py``), so that its torch path runs in
CI, which has no torch: PyPI's torch wheel for Linux depends on the CUDA packages (gigabytes for every fresh
machine), and no CPU-only wheel is reachable there. The tests with real torch still run wherever torch is
installed, and in a real ComfyUI (``tools/check_real_comfyui.sh``).

Only what tensors.py uses is here, and it is as strict as torch where a mistake would hide: ``numpy()`` refuses a
tensor that is not on the CPU or that requires grad (so a conversion must call ``detach()`` and ``cpu()``), an
index must be an integer or bool tensor on the CPU or the indexed tensor's device, ``from_numpy`` shares the
array's memory and refuses negative strides. A tensor's type says it is torch's (``__module__``), which is how
the node pack tells tensors from arrays.
"""

from __future__ import annotations

import types
from typing import Any, Optional, Union

import numpy as np

INDEX_KINDS = ("i", "u", "b")  # numpy kinds of the index tensors torch accepts (long, int, byte, bool)


class Dtype:
    """A torch dtype: a name and its numpy equivalent."""

    def __init__(self, name: str, numpy_dtype: np.dtype) -> None:
        self.name = name
        self.numpy = numpy_dtype

    def __repr__(self) -> str:
        return f"torch.{self.name}"


LONG = Dtype("int64", np.dtype(np.int64))


class Tensor:
    """An n-dimensional array on a named device."""

    def __init__(self, data: np.ndarray, device: str = "cpu", requires_grad: bool = False) -> None:
        self._data = data
        self._device = device
        self.requires_grad = requires_grad

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(int(n) for n in self._data.shape)

    @property
    def device(self) -> str:
        return self._device

    @property
    def dtype(self) -> np.dtype:
        return self._data.dtype

    def detach(self) -> "Tensor":
        return Tensor(self._data, self._device)

    def cpu(self) -> "Tensor":
        return Tensor(self._data, "cpu", self.requires_grad)

    def numpy(self) -> np.ndarray:
        if self.requires_grad:
            raise RuntimeError("Can't call numpy() on Tensor that requires grad. Use tensor.detach().numpy() instead.")
        if self._device != "cpu":
            raise TypeError(f"can't convert {self._device} device type tensor to numpy. Use Tensor.cpu() first.")
        return self._data

    def __getitem__(self, index: "Tensor") -> "Tensor":
        if not isinstance(index, Tensor):
            raise NotImplementedError("the torch stand-in indexes only with index tensors, as tensors.select does")
        if index.dtype.kind not in INDEX_KINDS:
            raise IndexError("tensors used as indices must be long, int, byte or bool tensors")
        if index.device not in ("cpu", self._device):
            raise RuntimeError(f"indices should be either on cpu or on the same device as the indexed tensor ({self._device})")
        return Tensor(self._data[index._data], self._device)


Tensor.__module__ = "torch"  # what the node pack looks at: type(value).__module__ is "torch" for real tensors


def from_numpy(array: np.ndarray) -> Tensor:
    if not isinstance(array, np.ndarray):
        raise TypeError(f"expected np.ndarray (got {type(array).__name__})")
    if any(stride < 0 for stride in array.strides):
        raise ValueError("At least one stride in the given numpy array is negative")
    return Tensor(array)


def as_tensor(data: Any, dtype: Optional[Dtype] = None, device: Optional[str] = None) -> Tensor:
    array = np.asarray(data, dtype=dtype.numpy if dtype is not None else None)
    return Tensor(array, device or "cpu")


def on(array: np.ndarray, device: str, requires_grad: bool = False) -> Tensor:
    """A tensor holding ``array`` on ``device`` (what a host would hand a node)."""
    return Tensor(array, device, requires_grad)


def data_of(tensor: Union[Tensor, Any]) -> np.ndarray:
    """The array inside a stand-in tensor, wherever it is (for the tests' assertions)."""
    if not isinstance(tensor, Tensor):
        raise TypeError(f"expected a torch stand-in tensor, got {type(tensor).__name__}")
    return tensor._data


def module() -> types.ModuleType:
    """A fresh ``torch`` module made of the stand-in's pieces, to put into ``sys.modules``."""
    torch = types.ModuleType("torch")
    torch.Tensor = Tensor  # type: ignore[attr-defined]
    torch.long = LONG  # type: ignore[attr-defined]
    torch.int64 = LONG  # type: ignore[attr-defined]
    torch.from_numpy = from_numpy  # type: ignore[attr-defined]
    torch.as_tensor = as_tensor  # type: ignore[attr-defined]
    return torch
