"""Statistically raw-equivalent replicas of a raw image (Pomarico et al. 2022, step 2).

Each pixel of the raw image is replaced by a fresh draw from the distribution the noise model
predicts for it: the raw value's electrons (``(raw − offset) · gain``) as the Poisson mean plus
Gaussian read noise, back to ADU, rounded like the ADC and clipped to its range.
"""

from __future__ import annotations

import numpy as np

from .model import NoiseModel

__all__ = ["replicas"]


def replicas(
    raw: np.ndarray,
    model: NoiseModel,
    n: int = 10,
    seed: int | None = 0,
) -> np.ndarray:
    """Draw ``n`` raw-equivalent replicas of a 2-D frame or a ``(..., H, W)`` stack.

    Each replica pixel is ``raw + (P − λ)/g + N(0, σ_r)/g``, rounded and clipped, where
    ``λ = max((raw − offset)·g, 0)`` electrons, ``P ~ Poisson(λ)``, ``g`` the gain [e-/ADU]
    and ``σ_r`` the read noise [e-]. The draw is centred on the raw value (so the replica
    mean equals the raw image, also below offset where λ = 0) and its variance is what the
    calibration predicts, ``(λ + σ_r²)/g² + 1/12`` ADU². Pixels at the ADC maximum stay
    saturated, as the camera would report them.

    Parameters
    ----------
    raw
        Raw frame ``(H, W)`` or stack ``(..., H, W)`` in ADU (integer camera data).
    model
        Noise model matching the frame's last two dimensions.
    n
        Number of replicas.
    seed
        Seed for the random stream (the same seed gives the same replicas).

    Returns
    -------
    ndarray
        ``(n, *raw.shape)`` in ``raw.dtype`` (uint16 for camera data).

    Raises
    ------
    ModelMismatchError
        When the frame's shape or values do not fit the model.
    """
    raw = np.asarray(raw)
    model.check_frame(raw)
    if n < 1:
        raise ValueError(f"n must be ≥ 1, got {n}")
    rng = np.random.default_rng(seed)
    gain = model.gain_e_per_adu.astype(np.float32)
    inv_gain = (1.0 / gain).astype(np.float32)
    rn_adu = (model.read_noise_e * inv_gain).astype(np.float32)
    adc_max = model.adc_max
    raw_f = raw.astype(np.float32)
    lam = np.maximum((raw_f - model.offset_adu) * gain, 0.0)
    saturated = raw >= adc_max
    out_dtype = raw.dtype if np.issubdtype(raw.dtype, np.integer) else np.dtype(np.uint16)
    out = np.empty((n, *raw.shape), out_dtype)
    for i in range(n):
        shot = rng.poisson(lam).astype(np.float32)
        shot -= lam
        shot *= inv_gain
        read = rng.standard_normal(raw.shape, dtype=np.float32)
        read *= rn_adu
        v = raw_f + shot
        v += read
        np.rint(v, out=v)
        np.clip(v, 0, adc_max, out=v)
        v[saturated] = adc_max
        out[i] = v
    return out
