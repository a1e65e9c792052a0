"""Random weights for a full-size model, made where they will live, one tensor at a time.

The GPU benchmark measures the published architectures without downloading them. The
weights are handed to transformers' loader as a state dict of lazy tensors: each one
is made on its device only when the loader reads it (as it reads a safetensors slice),
in the dtype the loader asks for, and bitsandbytes quantizes it right there. So the
loading path, its quantization and its memory are the real ones, and nothing is built
on the CPU first.

Values: norms' gains 1, biases 0, everything else N(0, 0.02²), integer buffers 0.
Random weights do not change the cost of a forward pass; the benchmark fixes answer
lengths, since what random weights say is noise.
"""

from __future__ import annotations

import torch


class RandomTensor:
    """A tensor made when read: `t[...]` returns it, on `device`, in `dtype`."""

    def __init__(self, name: str, shape: torch.Size, dtype: torch.dtype, device: str,
                 seed: int) -> None:
        self.name = name
        self.shape = torch.Size(shape)
        self.dtype = dtype
        self.device = torch.device(device)
        self.seed = seed

    def get_shape(self) -> list[int]:  # safetensors' slice interface
        return list(self.shape)

    def __getitem__(self, index) -> torch.Tensor:
        t = self._make()
        return t if index is Ellipsis else t[index]

    def _make(self) -> torch.Tensor:
        if not self.dtype.is_floating_point:
            return torch.zeros(self.shape, dtype=self.dtype, device=self.device)
        leaf = self.name.rsplit(".", 1)[-1]
        if leaf == "bias":
            return torch.zeros(self.shape, dtype=self.dtype, device=self.device)
        if len(self.shape) == 1 and ("norm" in self.name or leaf == "weight"):
            return torch.ones(self.shape, dtype=self.dtype, device=self.device)
        gen = torch.Generator(device=self.device).manual_seed(self.seed)
        out = torch.empty(self.shape, dtype=self.dtype, device=self.device)
        return out.normal_(0.0, 0.02, generator=gen)


def state_dict(skeleton: torch.nn.Module, device: str, float_dtype: torch.dtype, *,
               on_cpu: tuple[str, ...] = (), seed: int = 0) -> dict[str, RandomTensor]:
    """Lazy random tensors for every entry of `skeleton`'s state dict. Names under one of
    `on_cpu` (modules loaded on the CPU: embeddings kept in RAM) are made on the CPU."""
    out: dict[str, RandomTensor] = {}
    prefixes = tuple(f"{m}." for m in on_cpu)
    for i, (name, t) in enumerate(skeleton.state_dict().items()):
        where = "cpu" if name.startswith(prefixes) else device
        dtype = float_dtype if t.dtype.is_floating_point else t.dtype
        out[name] = RandomTensor(name, t.shape, dtype, where, seed + i)
    return out
