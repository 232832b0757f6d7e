"""Bilinear resizes that reproduce, value for value, the ones the reference feature extractors use.

Two conventions (neither antialiases when shrinking, unlike `jax.image.resize`):

* ``"half_pixel"`` — PyTorch ``F.interpolate(mode="bilinear", align_corners=False)``, what
  pytorch-fid applies before its InceptionV3: source coordinate ``(d + 0.5)·in/out − 0.5``,
  clamped below at 0.
* ``"tf1"`` — TensorFlow 1 ``tf.image.resize_bilinear(align_corners=False)`` (no half-pixel
  centres), what the original FVD code applies before I3D: source coordinate ``d·in/out``.

Both read the two neighbouring pixels ``floor(s)`` and ``min(floor(s) + 1, in − 1)``. The resize
is applied as two small interpolation matrices (one per axis), exact in float32 and jittable.
"""

import jax.numpy as jnp
import numpy as np

MODES = ("half_pixel", "tf1")


def interp_matrix(n_in: int, n_out: int, mode: str = "half_pixel") -> np.ndarray:
  """``[n_out, n_in]`` float32 weights of a 1-D bilinear resize (rows sum to 1)."""
  if mode not in MODES:
    raise ValueError(f"resize mode must be one of {MODES}, got {mode!r}")
  scale = n_in / n_out
  dst = np.arange(n_out, dtype=np.float64)
  src = (dst + 0.5) * scale - 0.5 if mode == "half_pixel" else dst * scale
  src = np.maximum(src, 0.0)
  i0 = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
  i1 = np.minimum(i0 + 1, n_in - 1)
  frac = (src - i0).astype(np.float32)
  m = np.zeros((n_out, n_in), np.float32)
  np.add.at(m, (np.arange(n_out), i0), np.float32(1.0) - frac)
  np.add.at(m, (np.arange(n_out), i1), frac)
  return m


def resize_bilinear(x, size: tuple[int, int], mode: str = "half_pixel", precision=None):
  """Resizes the two axes before the channel axis: ``[..., H, W, C]`` → ``[..., h, w, C]``."""
  h_in, w_in = x.shape[-3], x.shape[-2]
  h, w = size
  if (h_in, w_in) == (h, w):
    return x
  mh = jnp.asarray(interp_matrix(h_in, h, mode), x.dtype)
  mw = jnp.asarray(interp_matrix(w_in, w, mode), x.dtype)
  x = jnp.einsum("oh,...hwc->...owc", mh, x, precision=precision)
  return jnp.einsum("pw,...owc->...opc", mw, x, precision=precision)
