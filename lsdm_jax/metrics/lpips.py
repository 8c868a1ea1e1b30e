"""LPIPS perceptual distance (VGG16, version 0.1) in Flax, from a user-supplied weights file.

The distance is the `lpips` package's `LPIPS(net="vgg", version="0.1", lpips=True,
spatial=False)` in evaluation mode (its dropout inactive), the perceptual term of latent
diffusion's autoencoder loss. Images in [0, 1] are mapped to [-1, 1] (as the package's
`normalize=True`) and shifted and scaled per channel by the package's `ScalingLayer`
constants; both images go through torchvision's VGG16 `features`, tapped after relu1_2,
relu2_2, relu3_3, relu4_3 and relu5_3; each tap is normalised to unit length over its
channels (`x / (||x|| + 1e-10)`), the two images' taps are subtracted and squared, weighted
over channels by that layer's bias-free 1x1 "lin" convolution, averaged over space, and the
five layers summed. With the package's linear weights (non-negative) the distance is >= 0,
zero for identical images and symmetric.

The unit normalisation differs from the package only where a feature vector is exactly zero
(every channel switched off by the ReLU): the value is the same (0), but its gradient is
finite here (1/1e-10, which the ReLU then stops) where the package's is NaN (0 * inf, which
the ReLU cannot stop), so one dead pixel of a tap cannot turn a training step's gradient
into NaN.

The weights cannot be downloaded here. Produce the file once on a machine with network
access and `torch`, `torchvision` and `lpips` installed (torchvision downloads the ImageNet
VGG16 the first time; the linear weights ship inside the `lpips` wheel)::

  import lpips, numpy
  sd = lpips.LPIPS(net="vgg").state_dict()
  numpy.savez("lpips_vgg.npz", **{k: v.numpy() for k, v in sd.items()})

The keys are the `state_dict` keys, unchanged: the convolutions `net.slice1.0.weight` (OIHW)
and `net.slice1.0.bias`, `net.slice1.2.*`, `net.slice2.5.*`, ..., `net.slice5.28.*` (the
torchvision `features` index after the slice name), and `lin0.model.1.weight` ...
`lin4.model.1.weight` of shape (1, C, 1, 1). Other keys are ignored: `lins.0.model.1.weight`
... (the same tensors again, through the package's module list) and `scaling_layer.shift`
and `.scale` (the constants below). Then::

  dist = load_lpips("lpips_vgg.npz")
  d = dist(x, y)  # (N, H, W, 1 or 3) in [0, 1], H, W >= 16 -> (N,) float32

`dist` is a pytree (its params are leaves), so a jitted training step can take it as an
argument; or use the pieces: `params = load_lpips_params(path)` and the pure
`lpips_distance(params, x, y)`. The convolutions run at float32 precision
(`Precision.HIGHEST`); `dtype=jnp.bfloat16` runs the VGG in bfloat16 and the normalisation,
lin layers and reductions in float32.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Mapping
from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from lsdm_jax.errors import DataError
from lsdm_jax.metrics.params_file import convert_exported

# The package's ScalingLayer, applied to images in [-1, 1].
SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)
# The package's `normalize_tensor` epsilon, added to the channel norm.
NORM_EPS = 1e-10
# Channels of the five tapped layers (relu1_2 ... relu5_3).
CHANNELS = (64, 128, 256, 512, 512)
# Four 2x2 max pools precede relu5_3.
MIN_SIZE = 16

# The torchvision `features` index of each convolution, slice by slice; a 2x2 max pool
# opens every slice after the first, and each convolution is followed by a ReLU.
_SLICES = ((0, 2), (5, 7), (10, 12, 14), (17, 19, 21), (24, 26, 28))

# The export, as one shell line.
EXPORT = (
  'python -c \'import lpips, numpy; sd = lpips.LPIPS(net="vgg").state_dict(); '
  'numpy.savez("lpips_vgg.npz", **{k: v.numpy() for k, v in sd.items()})\''
)
_HOW = f"make it once where torch, torchvision and lpips are installed: {EXPORT}"


# --------------------------------------------------------------------------- network


class VGG16Features(nn.Module):
  """torchvision's VGG16 `features` up to relu5_3, returning the five LPIPS taps (NHWC).

  Attributes:
    dtype: computation dtype of the convolutions (the params stay float32).
    precision: precision of every convolution.
  """

  dtype: Any = jnp.float32
  precision: Any = jax.lax.Precision.HIGHEST

  @nn.compact
  def __call__(self, x: jax.Array) -> list[jax.Array]:
    """(N, H, W, 3) -> [relu1_2, relu2_2, relu3_3, relu4_3, relu5_3], (N, H/2^k, W/2^k, C_k)."""
    taps = []
    for s, (indices, channels) in enumerate(zip(_SLICES, CHANNELS, strict=True), start=1):
      if s > 1:
        x = nn.max_pool(x, (2, 2), strides=(2, 2))  # Floors odd sizes, as torch's.
      for index in indices:
        x = nn.Conv(
          channels,
          (3, 3),
          padding=((1, 1), (1, 1)),
          dtype=self.dtype,
          precision=self.precision,
          name=f"slice{s}_{index}",
        )(x)
        x = nn.relu(x)
      taps.append(x)
    return taps


def unit_normalize(features: jax.Array) -> jax.Array:
  """(..., C) -> (..., C) / (channel norm + 1e-10), as `lpips.normalize_tensor`.

  The square root is taken only of positive sums, so an all-zero vector has a finite
  gradient (1/1e-10) instead of NaN (0 * inf); the value is the package's everywhere.
  """
  sq = jnp.sum(features * features, axis=-1, keepdims=True)
  positive = sq > 0
  norm = jnp.where(positive, jnp.sqrt(jnp.where(positive, sq, 1.0)), 0.0)
  return features / (norm + NORM_EPS)


def _as_rgb(images: jax.Array, name: str) -> jax.Array:
  if images.ndim != 4 or images.shape[-1] not in (1, 3):
    raise DataError(f"LPIPS {name} has shape {images.shape}; pass (N, H, W, 1 or 3) NHWC images")
  if min(images.shape[1:3]) < MIN_SIZE:
    raise DataError(
      f"LPIPS {name} has shape {images.shape}; VGG16's relu5_3 needs H and W >= {MIN_SIZE}"
    )
  if images.shape[-1] == 1:
    images = jnp.repeat(images, 3, axis=-1)
  return images


class LPIPS(nn.Module):
  """The LPIPS (VGG, v0.1) distance between two batches of images in [0, 1].

  Attributes:
    dtype: computation dtype of the VGG (float32 or bfloat16); the unit normalisation, the
      lin layers and the reductions run in float32 either way.
  """

  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, y: jax.Array) -> jax.Array:
    """(N, H, W, 1 or 3) x and y in [0, 1], H, W >= 16 -> (N,) float32 distances."""
    x, y = _as_rgb(x, "x"), _as_rgb(y, "y")
    if x.shape != y.shape:
      raise DataError(f"LPIPS inputs differ in shape: x {x.shape}, y {y.shape}")
    n = x.shape[0]
    shift = jnp.asarray(SHIFT, jnp.float32).reshape(1, 1, 1, 3)
    scale = jnp.asarray(SCALE, jnp.float32).reshape(1, 1, 1, 3)
    # One VGG pass over both batches; the package's order of operations, for parity.
    both = jnp.concatenate([x, y]).astype(jnp.float32)
    both = ((2.0 * both - 1.0) - shift) / scale
    highest = jnp.dtype(self.dtype) == jnp.float32
    precision = jax.lax.Precision.HIGHEST if highest else jax.lax.Precision.DEFAULT
    taps = VGG16Features(self.dtype, precision, name="net")(both.astype(self.dtype))
    total = jnp.zeros((n,), jnp.float32)
    for k, tap in enumerate(taps):
      tap = unit_normalize(tap.astype(jnp.float32))
      diff = jnp.square(tap[:n] - tap[n:])
      weighted = nn.Conv(
        1, (1, 1), use_bias=False, precision=jax.lax.Precision.HIGHEST, name=f"lin{k}"
      )(diff)
      total = total + weighted.mean(axis=(1, 2, 3))
    return total


def lpips_distance(
  params: Any, x: jax.Array, y: jax.Array, *, dtype: Any = jnp.float32
) -> jax.Array:
  """Pure LPIPS distance; jittable and differentiable in `params`, `x` and `y`.

  Args:
    params: the `LPIPS` params, from `load_lpips_params` (`{"net": ..., "lin0": ...}`).
    x: (N, H, W, 1 or 3) float images in [0, 1]; grey ones are repeated to three channels.
    y: the images to compare with, the shape of `x` (after the grey repeat).
    dtype: computation dtype of the VGG (float32 or bfloat16).

  Returns:
    (N,) float32 distances.
  """
  return LPIPS(dtype=dtype).apply({"params": params}, x, y)


# --------------------------------------------------------------------------- weights


def expected_shapes() -> dict[str, tuple[int, ...]]:
  """Every required `state_dict` key and its shape, in network order."""
  out: dict[str, tuple[int, ...]] = {}
  cin = 3
  for s, (indices, cout) in enumerate(zip(_SLICES, CHANNELS, strict=True), start=1):
    for index in indices:
      out[f"net.slice{s}.{index}.weight"] = (cout, cin, 3, 3)
      out[f"net.slice{s}.{index}.bias"] = (cout,)
      cin = cout
  for k, channels in enumerate(CHANNELS):
    out[f"lin{k}.model.1.weight"] = (1, channels, 1, 1)
  return out


def random_state_dict(seed: int = 0) -> dict[str, np.ndarray]:
  """A stand-in for the real weights: every key of `lpips.LPIPS(net="vgg").state_dict()`,
  random: He-normal convolutions, small biases, non-negative lin weights (as the trained
  ones), their `lins.*` aliases and the ScalingLayer buffers. For tests and benchmarks
  only: its distances mean nothing, its FLOPs and memory are the real network's."""
  rng = np.random.default_rng(seed)
  out = {}
  for key, shape in expected_shapes().items():
    if key.startswith("lin"):
      out[key] = rng.uniform(0.0, 1.0, shape).astype(np.float32)
      out[f"lins.{key[3:]}"] = out[key]  # The package's module list holds them again.
    elif key.endswith(".weight"):
      std = np.sqrt(2.0 / np.prod(shape[1:]))
      out[key] = (rng.standard_normal(shape) * std).astype(np.float32)
    else:
      out[key] = rng.normal(0.0, 0.05, shape).astype(np.float32)
  out["scaling_layer.shift"] = np.array(SHIFT, np.float32).reshape(1, 3, 1, 1)
  out["scaling_layer.scale"] = np.array(SCALE, np.float32).reshape(1, 3, 1, 1)
  return out


def convert_state_dict(
  arrays: Mapping[str, np.ndarray], *, source: str = "the LPIPS state dict"
) -> dict[str, Any]:
  """`lpips.LPIPS(net="vgg").state_dict()` arrays -> `LPIPS` params (numpy float32).

  Args:
    arrays: key -> array, e.g. an opened `.npz`; keys the distance does not use are ignored.
    source: how error messages name the arrays (the file's path, for instance).

  Returns:
    `{"net": {"slice1_0": {"kernel": HWIO, "bias": ...}, ...}, "lin0": {"kernel": (1, 1, C,
    1)}, ...}`, the params of `LPIPS`.

  Raises:
    DataError: a required key is missing, wrongly shaped or not floating point.
  """
  expected = expected_shapes()
  keys = list(arrays.keys())
  if not set(keys) & set(expected):
    example = f" (it holds e.g. {sorted(keys)[0]!r})" if keys else " (it is empty)"
    raise DataError(f"{source} holds no LPIPS VGG keys{example}; {_HOW}")
  for key, shape in expected.items():
    if key not in arrays:
      raise DataError(f"{source} lacks key {key!r} (expected shape {shape}); {_HOW}")

  def get(key: str) -> np.ndarray:
    value = np.asarray(arrays[key])
    if value.shape != expected[key]:
      raise DataError(
        f"{source} key {key!r} has shape {value.shape}, expected {expected[key]}; {_HOW}"
      )
    if not np.issubdtype(value.dtype, np.floating):
      raise DataError(f"{source} key {key!r} has dtype {value.dtype}, expected float32; {_HOW}")
    return value.astype(np.float32)

  net: dict[str, Any] = {}
  for s, indices in enumerate(_SLICES, start=1):
    for index in indices:
      prefix = f"net.slice{s}.{index}"
      net[f"slice{s}_{index}"] = {
        "kernel": get(f"{prefix}.weight").transpose(2, 3, 1, 0),
        "bias": get(f"{prefix}.bias"),
      }
  params: dict[str, Any] = {"net": net}
  for k in range(len(CHANNELS)):
    params[f"lin{k}"] = {"kernel": get(f"lin{k}.model.1.weight").transpose(2, 3, 1, 0)}
  return params


def load_lpips_params(path: str | os.PathLike) -> dict[str, Any]:
  """Reads the LPIPS VGG weights from an `.npz` (see the module docstring).

  Args:
    path: an `.npz` of `lpips.LPIPS(net="vgg").state_dict()` arrays.

  Returns:
    The `LPIPS` params (float32 jax arrays on the default device), about 59 MB.

  Raises:
    DataError: the file is missing, not an `.npz`, or lacks a key or has a wrong shape.
  """
  params = convert_exported(path, "LPIPS weights file", _HOW, convert_state_dict)
  return jax.device_put(params)


@functools.cache
def _jitted(dtype: Any) -> Callable[[Any, jax.Array, jax.Array], jax.Array]:
  return jax.jit(functools.partial(lpips_distance, dtype=dtype))


@flax.struct.dataclass
class LPIPSDistance:
  """LPIPS with its weights; build it with `load_lpips`. A pytree: `params` are its leaves.

  Attributes:
    params: the `LPIPS` params.
    dtype: computation dtype of the VGG (static).
  """

  params: Any
  dtype: Any = flax.struct.field(pytree_node=False, default=jnp.float32)

  def __call__(self, x: jax.Array, y: jax.Array) -> jax.Array:
    """(N, H, W, 1 or 3) x, y in [0, 1] -> (N,) float32 distances; see `lpips_distance`."""
    return _jitted(jnp.dtype(self.dtype))(self.params, x, y)


def load_lpips(path: str | os.PathLike, dtype: Any = jnp.float32) -> LPIPSDistance:
  """Reads the LPIPS VGG weights from an `.npz` and returns the distance.

  Args:
    path: an `.npz` of `lpips.LPIPS(net="vgg").state_dict()` arrays (module docstring).
    dtype: computation dtype of the VGG: float32, or bfloat16 for speed.

  Returns:
    An `LPIPSDistance`; `dist(x, y)` on (N, H, W, C) images in [0, 1] gives (N,) distances.

  Raises:
    DataError: the file is missing or malformed.
  """
  return LPIPSDistance(load_lpips_params(path), jnp.dtype(dtype))
