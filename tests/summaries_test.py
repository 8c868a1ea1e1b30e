"""Tests of lsdm_jax.summaries: what is written is read back, tag by tag and step by step."""

import io
import logging

import numpy as np
import pytest
from PIL import Image

from lsdm_jax import parallel, summaries


def _scalars(directory) -> dict[str, list[tuple[int, float]]]:
  out = {}
  for event in summaries.read_events(directory):
    for value in event.summary.value:
      if value.HasField("simple_value"):
        out.setdefault(value.tag, []).append((event.step, value.simple_value))
  return out


def _images(directory) -> dict[str, list[tuple[int, np.ndarray]]]:
  out = {}
  for event in summaries.read_events(directory):
    for value in event.summary.value:
      if value.HasField("image"):
        pixels = np.asarray(Image.open(io.BytesIO(value.image.encoded_image_string)))
        assert pixels.shape == (value.image.height, value.image.width, value.image.colorspace)
        out.setdefault(value.tag, []).append((event.step, pixels))
  return out


def test_scalars_and_images_are_read_back(tmp_path, caplog):
  gray = np.linspace(0.0, 1.0, 12, dtype=np.float32).reshape(3, 4, 1)
  rgb = np.arange(2 * 5 * 3, dtype=np.uint8).reshape(2, 5, 3) * 8
  with caplog.at_level(logging.WARNING), summaries.SummaryWriter(tmp_path / "tb") as writer:
    writer.write_scalars(2, {"stage1/loss": 0.5, "stage1/steps_per_sec": 120.25})
    writer.write_scalars(4, {"stage1/loss": 0.125, "stage1/steps_per_sec": np.float32(99.5)})
    writer.write_scalars(4, {"stage2/w1": float("nan")})
    writer.write_images(7, {"samples/grid": gray, "samples/rgb": rgb})
  assert not caplog.records  # The NaN is kept without a warning (the loop gives its own).

  scalars = _scalars(tmp_path / "tb")
  assert scalars.keys() == {"stage1/loss", "stage1/steps_per_sec", "stage2/w1"}
  assert scalars["stage1/loss"] == [(2, 0.5), (4, 0.125)]
  assert scalars["stage1/steps_per_sec"] == [(2, 120.25), (4, 99.5)]
  [(step, w1)] = scalars["stage2/w1"]
  assert step == 4 and np.isnan(w1)

  images = _images(tmp_path / "tb")
  assert images.keys() == {"samples/grid", "samples/rgb"}
  [(step, grid)] = images["samples/grid"]
  assert step == 7
  want = np.round(gray * 255).astype(np.uint8)  # Gray is stored as RGB.
  np.testing.assert_array_equal(grid, np.repeat(want, 3, axis=-1))
  np.testing.assert_array_equal(images["samples/rgb"][0][1], rgb)


def test_writers_opened_in_the_same_second_keep_their_own_files(tmp_path):
  # As a stage resumed at once after a crash, or stage 2 right after stage 1.
  for step in (1, 2, 3):
    with summaries.SummaryWriter(tmp_path) as writer:
      writer.write_scalars(step, {"loss": float(step)})
  assert len(list(tmp_path.glob("events.out.tfevents.*"))) == 3
  assert sorted(_scalars(tmp_path)["loss"]) == [(1, 1.0), (2, 2.0), (3, 3.0)]


def test_events_are_written_when_the_block_ends_with_an_error(tmp_path):
  with pytest.raises(RuntimeError), summaries.SummaryWriter(tmp_path) as writer:
    writer.write_scalars(5, {"loss": 1.5})
    raise RuntimeError("NaN")
  assert _scalars(tmp_path) == {"loss": [(5, 1.5)]}


def test_only_process_zero_writes(tmp_path, monkeypatch):
  monkeypatch.setattr(parallel, "is_main_process", lambda: False)
  with summaries.SummaryWriter(tmp_path / "tb") as writer:
    writer.write_scalars(1, {"loss": 1.0})
    writer.write_images(1, {"grid": np.zeros((2, 2, 1))})
  assert not (tmp_path / "tb").exists()


def test_a_damaged_record_is_an_error_and_a_cut_one_ends_the_file(tmp_path):
  with summaries.SummaryWriter(tmp_path) as writer:
    writer.write_scalars(1, {"loss": 1.0})
    writer.write_scalars(2, {"loss": 2.0})
  [path] = tmp_path.glob("events.out.tfevents.*")
  data = path.read_bytes()
  path.write_bytes(data[:-3])  # The last record (step 2), cut short.
  assert _scalars(tmp_path) == {"loss": [(1, 1.0)]}
  path.write_bytes(data[:-6] + bytes([data[-6] ^ 1]) + data[-5:])  # One bit of its value.
  with pytest.raises(ValueError, match="bad checksum"):
    summaries.read_events(tmp_path)


def test_to_uint8_rounds_clips_and_checks_the_shape():
  x = np.array([[-0.5, 0.0, 0.5, 1.0, 1.001, np.nan]], np.float32)
  np.testing.assert_array_equal(summaries.to_uint8(x)[..., 0], [[0, 0, 128, 255, 255, 0]])
  u = np.full((2, 2, 3), 7, np.uint8)
  assert summaries.to_uint8(u) is u
  with pytest.raises(ValueError, match=r"got shape \(2, 2, 2\)"):
    summaries.to_uint8(np.zeros((2, 2, 2)))
