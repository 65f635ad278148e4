"""A factorized-prior model with 3-D convolutions, for stacks (Zhou et al. Table S3's 3-D variant).

Ballé et al.'s factorized prior (``bmshj2018-factorized``) with every 2-D layer made 3-D: four
strided convolutions with GDN in the analysis transform, four transposed ones with inverse GDN
in the synthesis transform, one entropy bottleneck (CompressAI's, which codes latents of any
dimension). One input channel: a stack is coded as a volume, so the transform sees the
correlation between neighbouring planes that a 2-D model codes again in every plane.

Anisotropic strides — (1, 2, 2), (2, 2, 2), (2, 2, 2), (1, 2, 2) — downsample Z 4× and Y, X
16×: microscopy stacks are sampled more coarsely and hold fewer planes in Z than pixels in Y and
X. Trained from scratch on the lab's stacks (``rawgate learned train --arch factorized3d``); no
zoo weights exist for it.

torch and compressai are imported when a model is built (the optional ``learned`` extra).
"""

from __future__ import annotations

from functools import cache
from typing import Any

__all__ = ["ARCH_3D", "PAD_3D", "build_factorized3d"]

ARCH_3D = "factorized3d"
#: (Z, Y, X) multiples an input volume is padded to (the transforms' total strides)
PAD_3D = (4, 16, 16)
_STRIDES = ((1, 2, 2), (2, 2, 2), (2, 2, 2), (1, 2, 2))


@cache
def _classes() -> tuple[type, type]:
    import torch
    import torch.nn.functional as F
    from compressai.entropy_models import EntropyBottleneck
    from compressai.layers import GDN
    from compressai.models.base import CompressionModel
    from torch import nn

    class GDN3d(GDN):
        """CompressAI's GDN (same parameters and re-parametrisation) over 5-D tensors."""

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            c = x.size(1)
            beta = self.beta_reparam(self.beta)
            gamma = self.gamma_reparam(self.gamma).reshape(c, c, 1, 1, 1)
            norm = F.conv3d(x**2, gamma, beta)
            return x * (torch.sqrt(norm) if self.inverse else torch.rsqrt(norm))

    def conv(cin: int, cout: int, stride: tuple[int, int, int]) -> nn.Module:
        return nn.Conv3d(cin, cout, kernel_size=5, stride=stride, padding=2)

    def deconv(cin: int, cout: int, stride: tuple[int, int, int]) -> nn.Module:
        return nn.ConvTranspose3d(cin, cout, kernel_size=5, stride=stride, padding=2,
                                  output_padding=tuple(s - 1 for s in stride))

    class FactorizedPrior3D(CompressionModel):
        """``bmshj2018-factorized`` in 3-D: ``(B, 1, Z, Y, X)`` in [0, 1] → latents → entropy
        bottleneck → reconstruction. ``N`` channels in the transforms, ``M`` latent channels."""

        def __init__(self, N: int, M: int, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            s = _STRIDES
            self.entropy_bottleneck = EntropyBottleneck(M)
            self.g_a = nn.Sequential(conv(1, N, s[0]), GDN3d(N), conv(N, N, s[1]), GDN3d(N),
                                     conv(N, N, s[2]), GDN3d(N), conv(N, M, s[3]))
            self.g_s = nn.Sequential(deconv(M, N, s[3]), GDN3d(N, inverse=True), deconv(N, N, s[2]),
                                     GDN3d(N, inverse=True), deconv(N, N, s[1]), GDN3d(N, inverse=True),
                                     deconv(N, 1, s[0]))
            self.N, self.M = int(N), int(M)

        def forward(self, x: torch.Tensor) -> dict[str, Any]:
            y = self.g_a(x)
            y_hat, y_likelihoods = self.entropy_bottleneck(y)
            return {"x_hat": self.g_s(y_hat), "likelihoods": {"y": y_likelihoods}}

        def compress(self, x: torch.Tensor) -> dict[str, Any]:
            y = self.g_a(x)
            return {"strings": [self.entropy_bottleneck.compress(y)], "shape": y.size()[-3:]}

        def decompress(self, strings: list[list[bytes]], shape: Any) -> dict[str, Any]:
            y_hat = self.entropy_bottleneck.decompress(strings[0], tuple(shape))
            return {"x_hat": self.g_s(y_hat).clamp_(0, 1)}

    return GDN3d, FactorizedPrior3D


def build_factorized3d(N: int, M: int) -> Any:
    """An untrained :class:`FactorizedPrior3D` (``N`` transform channels, ``M`` latent channels)."""
    return _classes()[1](N=int(N), M=int(M))
