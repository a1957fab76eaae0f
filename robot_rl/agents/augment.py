"""DrQ random-shift augmentation, for images and for cached feature maps.

:func:`random_shift` is DrQ's (Kostrikov et al., 2020; Yarats et al., 2021) pad-and-crop by whole pixels, done as an
index gather with replicated edges, so uint8 frames stay uint8. A frozen trunk's maps are cached per stored frame,
where the image can no longer be shifted; :func:`random_shift_features` shifts the cached map instead.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _offsets(n: int, high: int, device: torch.device, generator: torch.Generator | None) -> torch.Tensor:
    """``n`` integers uniform in ``[0, high)``, drawn on the generator's device and moved to ``device``."""
    gen_device = generator.device if generator is not None else device
    return torch.randint(0, high, (n,), generator=generator, device=gen_device).to(device)


def random_shift(
    x: torch.Tensor, pad: int = 4, generator: torch.Generator | None = None, channels_last: bool | None = None
) -> torch.Tensor:
    """Shift every sample by its own random integer offset in ``[-pad, pad]`` per axis, replicating edges.

    ``x``: uint8 ``(B, H, W, C)`` frames or float ``(B, C, H, W)`` tensors (images or feature maps);
    ``channels_last`` overrides the layout, which by default follows the dtype (uint8 -> channels last).
    Returns a new tensor of the same shape, dtype and device. ``pad=0`` returns ``x`` unchanged (same object).
    Equivalent to replicate-padding by ``pad`` and cropping ``H x W`` at a uniform offset in ``[0, 2 pad]``.
    """
    if pad < 0:
        raise ValueError(f"pad={pad} must be >= 0")
    if x.dim() != 4:
        raise ValueError(f"expected a batch (B, H, W, C) or (B, C, H, W), got shape {tuple(x.shape)}")
    if pad == 0:
        return x
    if channels_last is None:
        channels_last = x.dtype == torch.uint8
    b = x.shape[0]
    h, w = (x.shape[1], x.shape[2]) if channels_last else (x.shape[2], x.shape[3])
    dy = _offsets(b, 2 * pad + 1, x.device, generator) - pad
    dx = _offsets(b, 2 * pad + 1, x.device, generator) - pad
    rows = (torch.arange(h, device=x.device).unsqueeze(0) + dy.unsqueeze(1)).clamp_(0, h - 1)  # (B, H)
    cols = (torch.arange(w, device=x.device).unsqueeze(0) + dx.unsqueeze(1)).clamp_(0, w - 1)  # (B, W)
    bi = torch.arange(b, device=x.device).view(b, 1, 1)
    if channels_last:
        return x[bi, rows.unsqueeze(2), cols.unsqueeze(1)]  # (B, H, W, C)
    return x.permute(0, 2, 3, 1)[bi, rows.unsqueeze(2), cols.unsqueeze(1)].permute(0, 3, 1, 2).contiguous()


def random_shift_features(
    feat: torch.Tensor, max_shift: float = 0.5, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Shift each spatial feature map ``(B, C, h, w)`` by its own uniform offset in ``[-max_shift, max_shift]``
    cells per axis, with replicate padding and bilinear interpolation for fractional offsets.

    Float16 input (cached features) is shifted in float32 and returned in the input dtype. ``max_shift=0`` returns
    ``feat`` unchanged. Integer ``max_shift`` with integer-only shifts: use :func:`random_shift` on the map instead.

    Not the same augmentation as shifting the image (the trunk is non-linear and strided; ``max_shift = pad /
    stride`` matches only the displacement), but nearly free, and the trainable head still sees jittered spatial
    evidence.
    """
    if max_shift < 0:
        raise ValueError(f"max_shift={max_shift} must be >= 0")
    if feat.dim() != 4:
        raise ValueError(f"expected feature maps (B, C, h, w), got shape {tuple(feat.shape)}")
    if max_shift == 0:
        return feat
    b, _, h, w = feat.shape
    gen_device = generator.device if generator is not None else feat.device
    shift = (torch.rand(b, 2, generator=generator, device=gen_device).to(feat.device) * 2 - 1) * max_shift  # cells
    # align_corners=False: normalised coordinate u maps to pixel (u + 1) * size / 2 - 0.5, so one cell is 2 / size.
    ys = torch.linspace(-1 + 1 / h, 1 - 1 / h, h, device=feat.device)
    xs = torch.linspace(-1 + 1 / w, 1 - 1 / w, w, device=feat.device)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    grid = torch.stack([gx, gy], dim=-1).unsqueeze(0)  # (1, h, w, 2) as (x, y)
    grid = grid + (shift * torch.tensor([2.0 / w, 2.0 / h], device=feat.device)).view(b, 1, 1, 2)
    out = F.grid_sample(feat.float(), grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out.to(feat.dtype)
