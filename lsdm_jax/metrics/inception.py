"""FID's Inception-v3 pool features in Flax, from a user-supplied weights file.

The network is pytorch-fid's `fid_inception_v3` (the PyTorch port of the TensorFlow FID
graph, weights "pt_inception-2015-12-05"): torchvision's Inception-v3 trunk from
`Conv2d_1a_3x3` to `Mixed_7c`, with the FID variants of the mixed blocks (the average pools
of `Mixed_5b`-`5d`, `Mixed_6b`-`6e` and `Mixed_7b` exclude the zero padding from the count,
and `Mixed_7c` max-pools its pool branch). Each `BasicConv2d` is a bias-free convolution,
BatchNorm (eps 0.001, inference statistics) and ReLU; the BatchNorm is folded into the
convolution when the weights are converted. As in pytorch-fid's `InceptionV3`, images are
resized to 299x299 (bilinear, `align_corners=False`, no anti-aliasing) and mapped from
[0, 1] to [-1, 1]; the features are the 2048 channels of the global average pool after
`Mixed_7c`. Convolutions run at float32 precision (`Precision.HIGHEST`) on every backend.

The weights cannot be downloaded here. Produce the file once on a machine with network
access and pytorch-fid installed::

  import numpy
  from pytorch_fid.inception import fid_inception_v3

  sd = fid_inception_v3().state_dict()
  numpy.savez("pt_inception-2015-12-05.npz", **{k: v.numpy() for k, v in sd.items()})

The keys are the `state_dict` keys (`Conv2d_1a_3x3.conv.weight` in OIHW order,
`Conv2d_1a_3x3.bn.weight`, `.bn.bias`, `.bn.running_mean`, `.bn.running_var`, ...);
`fc.weight`, `fc.bias` and `*.bn.num_batches_tracked` may be present and are ignored. Then::

  features = load_inception("pt_inception-2015-12-05.npz")
  feats = features(images)  # (N, H, W, 1 or 3) in [0, 1] -> (N, 2048) float64
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Callable, Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from lsdm_jax.errors import ConfigError, DataError
from lsdm_jax.metrics.params_file import convert_exported

FEATURE_DIM = 2048
INPUT_SIZE = 299
BATCH_SIZE = 50
BN_EPS = 1e-3

_HOW = (
  "supply pytorch-fid's pt_inception-2015-12-05 weights converted with "
  "`numpy.savez(path, **{k: v.numpy() for k, v in fid_inception_v3().state_dict().items()})`"
)
# Keys a pytorch-fid state_dict may hold that the pool features do not use.
_IGNORED = ("fc.weight", "fc.bias")
_IGNORED_SUFFIX = ".bn.num_batches_tracked"


# --------------------------------------------------------------------------- network


def _pair(v: int | tuple[int, int]) -> tuple[int, int]:
  return (v, v) if isinstance(v, int) else tuple(v)


class BasicConv2d(nn.Module):
  """Convolution + (folded) BatchNorm + ReLU; the `conv` kernel is HWIO, its bias the BN shift."""

  features: int
  kernel_size: int | tuple[int, int]
  strides: int | tuple[int, int] = 1
  padding: int | tuple[int, int] = 0
  precision: Any = jax.lax.Precision.HIGHEST

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    ph, pw = _pair(self.padding)
    x = nn.Conv(
      self.features,
      _pair(self.kernel_size),
      strides=_pair(self.strides),
      padding=((ph, ph), (pw, pw)),
      use_bias=True,
      precision=self.precision,
      name="conv",
    )(x)
    return nn.relu(x)


def _avg_pool_3x3(x: jax.Array) -> jax.Array:
  """3x3 stride-1 average over the unpadded neighbours (TensorFlow's, `count_include_pad=False`)."""
  return nn.avg_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)), count_include_pad=False)


def _max_pool_3x3(x: jax.Array, stride: int) -> jax.Array:
  pad = ((1, 1), (1, 1)) if stride == 1 else "VALID"
  return nn.max_pool(x, (3, 3), strides=(stride, stride), padding=pad)


class FIDInceptionA(nn.Module):
  """`Mixed_5b`-`5d`: 1x1, 5x5, double 3x3 and pool branches."""

  pool_features: int
  precision: Any = jax.lax.Precision.HIGHEST

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    conv = functools.partial(BasicConv2d, precision=self.precision)
    b1 = conv(64, 1, name="branch1x1")(x)
    b5 = conv(48, 1, name="branch5x5_1")(x)
    b5 = conv(64, 5, padding=2, name="branch5x5_2")(b5)
    b3 = conv(64, 1, name="branch3x3dbl_1")(x)
    b3 = conv(96, 3, padding=1, name="branch3x3dbl_2")(b3)
    b3 = conv(96, 3, padding=1, name="branch3x3dbl_3")(b3)
    bp = conv(self.pool_features, 1, name="branch_pool")(_avg_pool_3x3(x))
    return jnp.concatenate([b1, b5, b3, bp], axis=-1)


class InceptionB(nn.Module):
  """`Mixed_6a`: the 35x35 -> 17x17 reduction."""

  precision: Any = jax.lax.Precision.HIGHEST

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    conv = functools.partial(BasicConv2d, precision=self.precision)
    b3 = conv(384, 3, strides=2, name="branch3x3")(x)
    bd = conv(64, 1, name="branch3x3dbl_1")(x)
    bd = conv(96, 3, padding=1, name="branch3x3dbl_2")(bd)
    bd = conv(96, 3, strides=2, name="branch3x3dbl_3")(bd)
    return jnp.concatenate([b3, bd, _max_pool_3x3(x, 2)], axis=-1)


class FIDInceptionC(nn.Module):
  """`Mixed_6b`-`6e`: factorised 7x7 branches of width `channels_7x7`."""

  channels_7x7: int
  precision: Any = jax.lax.Precision.HIGHEST

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    conv = functools.partial(BasicConv2d, precision=self.precision)
    c7 = self.channels_7x7
    b1 = conv(192, 1, name="branch1x1")(x)
    b7 = conv(c7, 1, name="branch7x7_1")(x)
    b7 = conv(c7, (1, 7), padding=(0, 3), name="branch7x7_2")(b7)
    b7 = conv(192, (7, 1), padding=(3, 0), name="branch7x7_3")(b7)
    bd = conv(c7, 1, name="branch7x7dbl_1")(x)
    bd = conv(c7, (7, 1), padding=(3, 0), name="branch7x7dbl_2")(bd)
    bd = conv(c7, (1, 7), padding=(0, 3), name="branch7x7dbl_3")(bd)
    bd = conv(c7, (7, 1), padding=(3, 0), name="branch7x7dbl_4")(bd)
    bd = conv(192, (1, 7), padding=(0, 3), name="branch7x7dbl_5")(bd)
    bp = conv(192, 1, name="branch_pool")(_avg_pool_3x3(x))
    return jnp.concatenate([b1, b7, bd, bp], axis=-1)


class InceptionD(nn.Module):
  """`Mixed_7a`: the 17x17 -> 8x8 reduction."""

  precision: Any = jax.lax.Precision.HIGHEST

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    conv = functools.partial(BasicConv2d, precision=self.precision)
    b3 = conv(192, 1, name="branch3x3_1")(x)
    b3 = conv(320, 3, strides=2, name="branch3x3_2")(b3)
    b7 = conv(192, 1, name="branch7x7x3_1")(x)
    b7 = conv(192, (1, 7), padding=(0, 3), name="branch7x7x3_2")(b7)
    b7 = conv(192, (7, 1), padding=(3, 0), name="branch7x7x3_3")(b7)
    b7 = conv(192, 3, strides=2, name="branch7x7x3_4")(b7)
    return jnp.concatenate([b3, b7, _max_pool_3x3(x, 2)], axis=-1)


class FIDInceptionE(nn.Module):
  """`Mixed_7b` (`pool="avg"`, FIDInceptionE_1) and `Mixed_7c` (`pool="max"`, FIDInceptionE_2)."""

  pool: str
  precision: Any = jax.lax.Precision.HIGHEST

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    conv = functools.partial(BasicConv2d, precision=self.precision)
    b1 = conv(320, 1, name="branch1x1")(x)
    b3 = conv(384, 1, name="branch3x3_1")(x)
    b3 = jnp.concatenate(
      [
        conv(384, (1, 3), padding=(0, 1), name="branch3x3_2a")(b3),
        conv(384, (3, 1), padding=(1, 0), name="branch3x3_2b")(b3),
      ],
      axis=-1,
    )
    bd = conv(448, 1, name="branch3x3dbl_1")(x)
    bd = conv(384, 3, padding=1, name="branch3x3dbl_2")(bd)
    bd = jnp.concatenate(
      [
        conv(384, (1, 3), padding=(0, 1), name="branch3x3dbl_3a")(bd),
        conv(384, (3, 1), padding=(1, 0), name="branch3x3dbl_3b")(bd),
      ],
      axis=-1,
    )
    pooled = _avg_pool_3x3(x) if self.pool == "avg" else _max_pool_3x3(x, 1)
    bp = conv(192, 1, name="branch_pool")(pooled)
    return jnp.concatenate([b1, b3, bd, bp], axis=-1)


def resize_bilinear(images: jax.Array, size: int = INPUT_SIZE) -> jax.Array:
  """(N, H, W, C) -> (N, size, size, C) as `F.interpolate(mode="bilinear", align_corners=False)`.

  Half-pixel centres, edge samples clamped and no anti-aliasing when shrinking, as PyTorch's;
  the result agrees with it to float32 round-off (about 1e-7 for images in [0, 1]).
  """
  n, height, width, channels = images.shape
  if (height, width) == (size, size):
    return images
  return jax.image.resize(images, (n, size, size, channels), "bilinear", antialias=False)


class InceptionV3(nn.Module):
  """pytorch-fid's FID Inception-v3 up to the 2048-d global average pool, NHWC float32.

  Attributes:
    resize_input: resize inputs to 299x299 first (bilinear, as pytorch-fid).
    normalize_input: map inputs from [0, 1] to [-1, 1] first.
    precision: precision of every convolution (default float32 on all backends).
  """

  resize_input: bool = True
  normalize_input: bool = True
  precision: Any = jax.lax.Precision.HIGHEST

  @nn.compact
  def __call__(self, images: jax.Array) -> jax.Array:
    """(N, H, W, 3) float32 images in [0, 1] -> (N, 2048) float32 pool features."""
    x = images.astype(jnp.float32)
    if self.resize_input:
      x = resize_bilinear(x)
    if self.normalize_input:
      x = 2.0 * x - 1.0
    p = self.precision
    conv = functools.partial(BasicConv2d, precision=p)
    x = conv(32, 3, strides=2, name="Conv2d_1a_3x3")(x)
    x = conv(32, 3, name="Conv2d_2a_3x3")(x)
    x = conv(64, 3, padding=1, name="Conv2d_2b_3x3")(x)
    x = _max_pool_3x3(x, 2)
    x = conv(80, 1, name="Conv2d_3b_1x1")(x)
    x = conv(192, 3, name="Conv2d_4a_3x3")(x)
    x = _max_pool_3x3(x, 2)
    x = FIDInceptionA(32, precision=p, name="Mixed_5b")(x)
    x = FIDInceptionA(64, precision=p, name="Mixed_5c")(x)
    x = FIDInceptionA(64, precision=p, name="Mixed_5d")(x)
    x = InceptionB(precision=p, name="Mixed_6a")(x)
    x = FIDInceptionC(128, precision=p, name="Mixed_6b")(x)
    x = FIDInceptionC(160, precision=p, name="Mixed_6c")(x)
    x = FIDInceptionC(160, precision=p, name="Mixed_6d")(x)
    x = FIDInceptionC(192, precision=p, name="Mixed_6e")(x)
    x = InceptionD(precision=p, name="Mixed_7a")(x)
    x = FIDInceptionE("avg", precision=p, name="Mixed_7b")(x)
    x = FIDInceptionE("max", precision=p, name="Mixed_7c")(x)
    return x.mean(axis=(1, 2))


# --------------------------------------------------------------------------- weights


@functools.cache
def _conv_shapes() -> dict[str, tuple[int, int, int, int]]:
  """Torch prefix (e.g. `Mixed_5b.branch1x1`) -> OIHW shape of its conv, in network order."""
  shapes = jax.eval_shape(
    InceptionV3(resize_input=False).init,
    jax.random.key(0),
    jax.ShapeDtypeStruct((1, INPUT_SIZE, INPUT_SIZE, 3), jnp.float32),
  )["params"]
  out = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(shapes)[0]:
    names = [k.key for k in path]
    if names[-1] == "kernel":
      kh, kw, cin, cout = leaf.shape
      out[".".join(names[:-2])] = (cout, cin, kh, kw)
  return out


def expected_shapes() -> dict[str, tuple[int, ...]]:
  """Every required state_dict key and its shape, in network order (fc and counters excluded)."""
  out = {}
  for prefix, oihw in _conv_shapes().items():
    out[f"{prefix}.conv.weight"] = oihw
    for stat in ("weight", "bias", "running_mean", "running_var"):
      out[f"{prefix}.bn.{stat}"] = (oihw[0],)
  return out


def _ignored(key: str) -> bool:
  return key in _IGNORED or key.endswith(_IGNORED_SUFFIX)


def _check_keys(keys: list[str], source: str) -> None:
  expected = expected_shapes()
  present = set(keys)
  if not present & set(expected):
    example = f" (it holds e.g. {sorted(keys)[0]!r})" if keys else " (it is empty)"
    raise DataError(f"{source} holds no pytorch-fid Inception keys{example}; {_HOW}")
  for key, shape in expected.items():
    if key not in present:
      raise DataError(f"{source} lacks key {key!r} (expected shape {shape}); {_HOW}")
  for key in keys:
    if key not in expected and not _ignored(key):
      raise DataError(f"{source} has unexpected key {key!r}; {_HOW}")


def _check_array(key: str, value: Any, source: str) -> np.ndarray:
  shape = expected_shapes()[key]
  value = np.asarray(value)
  if value.shape != shape:
    raise DataError(f"{source} key {key!r} has shape {value.shape}, expected {shape}; {_HOW}")
  if not np.issubdtype(value.dtype, np.floating):
    raise DataError(f"{source} key {key!r} has dtype {value.dtype}, expected float32; {_HOW}")
  return value


def convert_state_dict(
  arrays: Mapping[str, np.ndarray], *, source: str = "the Inception state dict"
) -> dict[str, Any]:
  """pytorch-fid `state_dict` arrays -> Flax variables `{"params": ...}` of `InceptionV3`.

  Each BatchNorm is folded into its convolution (in float64): the kernel becomes
  `w * gamma / sqrt(var + 0.001)` in HWIO order and the bias `beta - mean * gamma /
  sqrt(var + 0.001)`, both float32.

  Args:
    arrays: key -> array, e.g. an opened `.npz`; `fc.*` and `*.num_batches_tracked` ignored.
    source: how error messages name the arrays (the file's path, for instance).

  Returns:
    The variables to pass to `InceptionV3().apply`.

  Raises:
    DataError: a key is missing, unexpected, wrongly shaped or not floating point.
  """
  _check_keys(list(arrays.keys()), source)
  params: dict[str, Any] = {}
  for prefix in _conv_shapes():

    def get(name: str, prefix: str = prefix) -> np.ndarray:
      key = f"{prefix}.{name}"
      return _check_array(key, arrays[key], source).astype(np.float64)

    weight = get("conv.weight")
    gamma, beta = get("bn.weight"), get("bn.bias")
    mean, var = get("bn.running_mean"), get("bn.running_var")
    scale = gamma / np.sqrt(var + BN_EPS)
    node = params
    for name in prefix.split("."):
      node = node.setdefault(name, {})
    node["conv"] = {
      "kernel": (weight * scale[:, None, None, None]).transpose(2, 3, 1, 0).astype(np.float32),
      "bias": (beta - mean * scale).astype(np.float32),
    }
  return {"params": params}


def random_state_dict(seed: int = 0) -> dict[str, np.ndarray]:
  """A stand-in for the real weights: every key of `fid_inception_v3().state_dict()`.

  Convolutions are He-normal, BatchNorm scales and statistics mildly random, so activations
  neither vanish nor explode through the network; `fc.*` and the BatchNorm counters are
  included as in a real export. For tests and benchmarks only: its features mean nothing.

  Args:
    seed: seeds numpy's generator.

  Returns:
    key -> float32 array (int64 scalars for `num_batches_tracked`), about 100 MB.
  """
  rng = np.random.default_rng(seed)
  out: dict[str, np.ndarray] = {}
  for prefix, (cout, cin, kh, kw) in _conv_shapes().items():
    std = np.sqrt(2.0 / (cin * kh * kw))
    out[f"{prefix}.conv.weight"] = (rng.standard_normal((cout, cin, kh, kw)) * std).astype(
      np.float32
    )
    out[f"{prefix}.bn.weight"] = rng.uniform(0.8, 1.2, cout).astype(np.float32)
    out[f"{prefix}.bn.bias"] = rng.normal(0.0, 0.1, cout).astype(np.float32)
    out[f"{prefix}.bn.running_mean"] = rng.normal(0.0, 0.1, cout).astype(np.float32)
    out[f"{prefix}.bn.running_var"] = rng.uniform(0.5, 1.5, cout).astype(np.float32)
    out[f"{prefix}{_IGNORED_SUFFIX}"] = np.array(0, np.int64)
  out["fc.weight"] = (rng.standard_normal((1008, FEATURE_DIM)) * 0.01).astype(np.float32)
  out["fc.bias"] = np.zeros(1008, np.float32)
  return out


# --------------------------------------------------------------------------- features


@functools.cache
def _apply_fn() -> Callable[[Any, jax.Array], jax.Array]:
  """One jitted forward pass, compiled once per input batch shape."""
  module = InceptionV3()
  return jax.jit(lambda variables, images: module.apply(variables, images))


@dataclasses.dataclass(frozen=True)
class InceptionFeatures:
  """FID Inception pool features of images; build it with `load_inception`.

  Attributes:
    variables: the `InceptionV3` variables, on the default device.
    batch_size: images per jitted call; a call takes min(batch_size, N) images, the last one
      zero-padded to that size, so each image shape compiles once.
    source: where the weights came from, for messages.
  """

  variables: Any
  batch_size: int = BATCH_SIZE
  source: str = ""
  feature_dim: int = FEATURE_DIM

  def __call__(self, images: np.ndarray | jax.Array, batch_size: int | None = None) -> np.ndarray:
    """(N, H, W, C) images -> (N, 2048) float64 pool features.

    Args:
      images: float in [0, 1] or uint8 in [0, 255], any H and W (resized to 299x299),
        C = 3 or 1 (grey, repeated to three channels); an (N, H, W) array is grey.
      batch_size: images per jitted call, default `self.batch_size`.

    Returns:
      The features, float64.
    """
    images = _as_float_nhwc(images)
    n = len(images)
    if n == 0:
      return np.zeros((0, FEATURE_DIM), np.float64)
    size = int(self.batch_size if batch_size is None else batch_size)
    if size < 1:
      raise ConfigError(f"Inception batch_size is {size}; pass a positive number of images")
    size = min(size, n)
    apply = _apply_fn()
    feats = []
    for start in range(0, n, size):
      batch = images[start : start + size]
      pad = size - len(batch)
      if pad:  # One batch shape, one compilation.
        batch = np.concatenate([batch, np.zeros((pad, *batch.shape[1:]), batch.dtype)])
      if batch.shape[-1] == 1:
        batch = np.repeat(batch, 3, axis=-1)
      feats.append(np.asarray(apply(self.variables, batch))[: size - pad])
    return np.concatenate(feats).astype(np.float64)


def _as_float_nhwc(images: np.ndarray | jax.Array) -> np.ndarray:
  """Checks (N, H, W, 1 or 3) and converts uint8 [0, 255] or float [0, 1] to float32."""
  images = np.asarray(images)
  if images.ndim == 3:
    images = images[..., None]
  if images.ndim != 4 or images.shape[-1] not in (1, 3):
    raise DataError(
      f"images have shape {images.shape}; the Inception features take (N, H, W, 1 or 3) NHWC"
    )
  if images.dtype == np.uint8:
    return images.astype(np.float32) / 255.0
  if not np.issubdtype(images.dtype, np.floating):
    raise DataError(f"images have dtype {images.dtype}; pass uint8 or float32 in [0, 1]")
  return images.astype(np.float32, copy=False)


def load_inception(path: str | os.PathLike, *, batch_size: int = BATCH_SIZE) -> InceptionFeatures:
  """Reads pytorch-fid's Inception weights from an `.npz` and returns the feature extractor.

  Args:
    path: an `.npz` of `fid_inception_v3().state_dict()` arrays (see the module docstring).
    batch_size: images per jitted call; memory grows linearly with it.

  Returns:
    An `InceptionFeatures`; call it on (N, H, W, C) images for (N, 2048) float64 features.

  Raises:
    DataError: the file is missing, not an `.npz`, or its keys or shapes are not the
      network's.
  """
  variables = convert_exported(path, "Inception weights file", _HOW, convert_state_dict)
  path = os.fspath(path)
  return InceptionFeatures(jax.device_put(variables), batch_size=batch_size, source=path)
