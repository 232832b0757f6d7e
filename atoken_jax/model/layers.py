"""Small building blocks: norms computed in float32, dense layers with logical axis names, MLP."""
from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

Dtype = jnp.dtype


class DenseGeneral(nn.Module):
  """y = x . kernel (+ bias), contracting x's last `in_dims` dims; kernel [*in, *features].

  Unlike `nn.DenseGeneral`, the kernel is created in its full shape, so its logical axis names
  (one per kernel dim: inputs first, then outputs) shard it directly. Xavier-uniform init with
  fans over the input and output dims.

  `in_features` fixes the kernel's input width for inputs that may hold only a prefix of it
  (the missing inputs are zeros, so only the kernel's first rows are read); `out_features`
  at call time computes only a prefix of the outputs (1-D features). The patch layers use both:
  a batch of single-frame samples carries frame 0 of each patch (`atoken_jax.batch`).
  """
  features: tuple[int, ...]
  axes: tuple[str | None, ...]
  in_dims: int = 1
  use_bias: bool = True
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  in_features: int | None = None

  @nn.compact
  def __call__(self, x: jax.Array, out_features: int | None = None) -> jax.Array:
    in_shape = x.shape[x.ndim - self.in_dims:]
    if self.in_features is not None:
      if self.in_dims != 1 or in_shape[0] > self.in_features:
        raise ValueError(f"{self.name}: input width {in_shape} does not fit in_features="
                         f"{self.in_features}")
      shape = (self.in_features,) + tuple(self.features)
    else:
      shape = tuple(in_shape) + tuple(self.features)
    if len(self.axes) != len(shape):
      raise ValueError(f"{self.name}: {len(shape)} kernel dims but axes {self.axes}")
    init = nn.initializers.variance_scaling(
        1.0, "fan_avg", "uniform", in_axis=tuple(range(self.in_dims)),
        out_axis=tuple(range(self.in_dims, len(shape))))
    kernel = self.param("kernel", nn.with_logical_partitioning(init, self.axes), shape,
                        self.param_dtype)
    if self.in_features is not None:
      kernel = kernel[:in_shape[0]]
    if out_features is not None:
      if len(self.features) != 1 or out_features > self.features[0]:
        raise ValueError(f"{self.name}: out_features={out_features} needs 1-D features of at "
                         f"least that width, got {self.features}")
      kernel = kernel[..., :out_features]
    y = jax.lax.dot_general(
        x.astype(self.dtype), kernel.astype(self.dtype),
        ((tuple(range(x.ndim - self.in_dims, x.ndim)), tuple(range(self.in_dims))), ((), ())))
    if self.use_bias:
      bias = self.param("bias", nn.with_logical_partitioning(
          nn.initializers.zeros_init(), self.axes[self.in_dims:]), tuple(self.features),
                        self.param_dtype)
      if out_features is not None:
        bias = bias[:out_features]
      y = y + bias.astype(self.dtype)
    return y


def dense(features, axes: Sequence[str | None], *, use_bias: bool, dtype, param_dtype,
          name: str, in_axis: int | tuple[int, ...] = -1,
          in_features: int | None = None) -> DenseGeneral:
  """A DenseGeneral whose kernel and bias carry logical axis names.

  `axes` names every kernel dimension: the contracted input dims first, then the output dims;
  `in_axis` is -1 or a tuple of the trailing input dims to contract, e.g. (-2, -1).
  """
  features = tuple(features) if isinstance(features, (tuple, list)) else (features,)
  in_dims = 1 if isinstance(in_axis, int) else len(in_axis)
  return DenseGeneral(features=features, axes=tuple(axes), in_dims=in_dims, use_bias=use_bias,
                      dtype=dtype, param_dtype=param_dtype, name=name, in_features=in_features)


class LayerNorm(nn.Module):
  """LayerNorm over the last axis in float32 (biased variance), cast back to the input dtype."""
  eps: float = 1e-6
  use_scale: bool = True
  use_bias: bool = True
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    y = x.astype(jnp.float32)
    mean = y.mean(-1, keepdims=True)
    var = jnp.square(y - mean).mean(-1, keepdims=True)
    y = (y - mean) * jax.lax.rsqrt(var + self.eps)
    c = x.shape[-1]
    if self.use_scale:
      y = y * self.param("scale", nn.with_logical_partitioning(nn.initializers.ones_init(),
                                                               ("norm",)), (c,), self.param_dtype)
    if self.use_bias:
      y = y + self.param("bias", nn.with_logical_partitioning(nn.initializers.zeros_init(),
                                                              ("norm",)), (c,), self.param_dtype)
    return y.astype(x.dtype)


class RMSNorm(nn.Module):
  """x * rsqrt(mean(x^2) + eps) * scale, in float32."""
  eps: float = 1e-6
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    y = x.astype(jnp.float32)
    y = y * jax.lax.rsqrt(jnp.square(y).mean(-1, keepdims=True) + self.eps)
    scale = self.param("scale", nn.with_logical_partitioning(nn.initializers.ones_init(),
                                                             ("norm",)),
                       (x.shape[-1],), self.param_dtype)
    return (y * scale).astype(x.dtype)


class Mlp(nn.Module):
  """Linear(C -> M) -> GELU(tanh) -> Linear(M -> C)."""
  mlp_dim: int
  use_bias: bool = True
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    c = x.shape[-1]
    kw = dict(use_bias=self.use_bias, dtype=self.dtype, param_dtype=self.param_dtype)
    h = dense(self.mlp_dim, ("embed", "mlp"), name="fc1", **kw)(x)
    h = nn.gelu(h, approximate=True)
    return dense(c, ("mlp", "embed"), name="fc2", **kw)(h)


def norm_layer(rms: bool, eps: float, param_dtype, name: str) -> nn.Module:
  return (RMSNorm(eps=eps, param_dtype=param_dtype, name=name) if rms else
          LayerNorm(eps=eps, param_dtype=param_dtype, name=name))
