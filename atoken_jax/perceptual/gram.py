"""Gram-matrix (style/texture) loss on the frozen LPIPS VGG16 trunk.

The AToken paper uses a Gram-matrix loss without naming its feature network. Choice made here:
the five LPIPS VGG16 taps (relu1_2, relu2_2, relu3_3, relu4_3, relu5_3) of the LPIPS-scaled input
(the same trunk, weights and preprocessing as the LPIPS loss, so one set of weights serves both).
Raw ReLU activations are used (no channel-unit normalisation). Per layer l with activations
F_l ``[H_l·W_l, C_l]``:

    G_l = F_lᵀ F_l / (H_l · W_l · C_l)                    (``[C_l, C_l]``)
    L(x, y) = Σ_l ‖G_l(x) − G_l(y)‖²_F                    (squared Frobenius norm, equal weights)

The H·W·C normalisation (Johnson et al. 2016) keeps each layer's Gram entries O(activation²)
independent of resolution and width, so no per-layer weights are needed.
"""

import jax.numpy as jnp

from atoken_jax.perceptual.lpips import LPIPS


def gram_matrix(f):
  """``f [N, H, W, C]`` → ``[N, C, C]`` = ``FᵀF / (H·W·C)``, computed in float32."""
  f = f.astype(jnp.float32)
  n, h, w, c = f.shape
  f = f.reshape(n, h * w, c)
  return jnp.einsum("npc,npd->ncd", f, f) / (h * w * c)


def gram_loss_from_features(feats_x, feats_y):
  """Σ_l ‖G(fx_l) − G(fy_l)‖²_F for two lists of ``[N, H_l, W_l, C_l]`` taps; returns ``[N]``."""
  total = 0.0
  for fx, fy in zip(feats_x, feats_y, strict=True):
    total = total + jnp.sum(jnp.square(gram_matrix(fx) - gram_matrix(fy)), axis=(1, 2))
  return total


def gram_loss(params, x, y, net="vgg", precision=None):
  """Gram-matrix loss between image batches ``x, y [N, H, W, 3]`` in [-1, 1]; returns ``[N]``.

  Args:
    params: LPIPS parameters (only ``params["backbone"]`` is read), e.g. from
      :func:`atoken_jax.perceptual.load_lpips_params`.
    net: 'vgg' (the documented choice) or 'alex'.
  """
  model = LPIPS(net=net, precision=precision)
  n = x.shape[0]
  feats = model.apply({"params": params}, jnp.concatenate([x, y], axis=0), method=LPIPS.features)
  return gram_loss_from_features([f[:n] for f in feats], [f[n:] for f in feats])
