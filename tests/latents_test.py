"""Tests of lsdm_jax.latents: sharded encoding, on-device statistics, Orbax round trip."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lsdm_jax import latents, parallel
from lsdm_jax.errors import CheckpointError
from lsdm_jax.models.autoencoder import Autoencoder, encode_mean


@pytest.fixture(scope="module")
def autoencoder():
  model = Autoencoder((8, 8, 1), latent_dim=3, features=(4,), hidden=8)
  params = model.init(jax.random.key(0), jnp.zeros((1, 8, 8, 1)))["params"]
  images = np.random.default_rng(0).integers(0, 256, (30, 8, 8, 1), dtype=np.uint8)
  return model, params, images


@pytest.mark.parametrize("mesh_shape", [(8, 1), (4, 2)])
def test_encode_gives_global_codes_sharded_over_data(autoencoder, mesh_shape):
  model, params, images = autoencoder
  mesh = parallel.make_mesh(*mesh_shape)
  rows = np.array([3, 1, 4, 15, 9, 26, 5, 29, 6, 7, 0, 2, 8])  # 13 rows, any order.
  z = latents.encode(model, params, images, mesh, rows=rows, chunk=8)  # 2 calls of 8 rows.
  assert z.shape == (16, 3) and z.sharding.spec == jax.sharding.PartitionSpec("data")
  want = np.asarray(encode_mean(model, params, images[rows].astype(np.float32) / 255.0))
  got = np.asarray(z)
  np.testing.assert_allclose(got[:13], want, atol=1e-5)
  np.testing.assert_allclose(got[13:], np.repeat(want[-1:], 3, axis=0), atol=1e-5)  # Padding.


def test_latent_stats_ignore_padding_and_match_numpy():
  rng = np.random.default_rng(1)
  a, b = rng.standard_normal((10, 4)), 3.0 + rng.standard_normal((5, 4))
  a[:, 3] = b[:, 3] = 2.0  # A constant dimension: its std is floored, not zero.
  mesh = parallel.make_mesh(8, 1)
  ga = parallel.global_rows(mesh, lambda r: a[r].astype(np.float32), 10)
  gb = parallel.global_rows(mesh, lambda r: b[r].astype(np.float32), 5)
  mean, std = latents.latent_stats([ga, gb, None], [10, 5, 0])
  both = np.concatenate([a, b])
  np.testing.assert_allclose(mean, both.mean(0), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(std[:3], both.std(0)[:3], rtol=1e-5)
  assert 0 < float(std[3]) <= 1e-3 * both.std() + 1e-7
  assert mean.sharding.is_fully_replicated
  host_mean, _ = latents.latent_stats(both.astype(np.float32))
  np.testing.assert_allclose(host_mean, mean, rtol=1e-5, atol=1e-6)


def test_save_and_load_round_trip_on_other_meshes(autoencoder, tmp_path):
  model, params, images = autoencoder
  mesh = parallel.make_mesh(8, 1)
  z = latents.encode(model, params, images, mesh, rows=np.arange(13))
  x = np.arange(13, dtype=np.int32) % 3
  mean, std = latents.latent_stats(z, [13])
  latents.save(
    tmp_path / "latents",
    mesh,
    x=x,
    z=z,
    z_unpaired=None,
    mean=mean,
    std=std,
    meta={"latent_dim": 3},
    n_paired=13,
  )
  meta = latents.read_meta(tmp_path / "latents")
  assert meta["n_paired"] == 13 and meta["n_unpaired"] == 0 and meta["latent_dim"] == 3
  assert meta["arrays"]["z"][0] == [16, 3]
  want = np.asarray(z)[:13]
  for shape in [(8, 1), (4, 2), (3, 1), (1, 1)]:  # 16 rows do not split over 3 devices.
    other = parallel.make_mesh(*shape)
    arrays, _ = latents.load(tmp_path / "latents", other)
    assert arrays["z"].shape == (13, 3) and arrays["z"].sharding.is_fully_replicated
    np.testing.assert_allclose(np.asarray(arrays["z"]), want, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(arrays["x"]), x)
    np.testing.assert_allclose(np.asarray(arrays["mean"]), np.asarray(mean))
    sharded, _ = latents.load(tmp_path / "latents", other, sharded=True)
    assert sharded["z"].shape[0] == parallel.padded_size(13, other)
    assert sharded["z"].sharding.spec == jax.sharding.PartitionSpec("data")
    np.testing.assert_allclose(np.asarray(sharded["z"])[:13], want, atol=1e-6)


def test_load_without_latents_names_the_fix(tmp_path):
  with pytest.raises(CheckpointError, match="run the pipeline"):
    latents.load(tmp_path, parallel.make_mesh(1, 1))
