"""TensorBoard event files, written with tensorboardX (no TensorFlow needed).

A run's events go to `<workdir>/tensorboard/`: one TensorBoard run per workdir, with the
stage in the tag (`stage1/loss`, `stage2/...`, `samples/grid`, `eval/...`), so that
`tensorboard --logdir` on a folder of workdirs compares runs side by side. Every writer
opens an event file of its own (the stages, the final pictures and metrics, and each
rerun), so a resumed run adds to what the earlier one wrote.

Only process 0 writes, as for `metrics.jsonl`; on the other processes a writer does nothing.
`read_events` reads the files back without TensorBoard (for tests and quick looks).
"""

from __future__ import annotations

import itertools
import logging
import os
import pathlib
import struct
from collections.abc import Mapping

import numpy as np

from lsdm_jax import parallel

FLUSH_SECS = 10  # At most this stale on disk, for a TensorBoard watching a live run.
# tensorboardX names a file by the second and the host only, and a second writer with the
# same name would truncate the first: the process id and a serial number tell them apart.
_SERIAL = itertools.count()


class SummaryWriter:
  """Scalars and images for TensorBoard, in a new event file in `directory`.

  Events are queued and written by a background thread: `close()` (or leaving a `with`
  block, also by an exception) writes the rest. A closed writer writes nothing more.
  """

  def __init__(self, directory: str | os.PathLike):
    self._writer = None
    if parallel.is_main_process():
      # Here, not at the top: tensorboardX imports torch when it is installed.
      import tensorboardX

      # Its one message, "NaN or Inf found in input tensor", would repeat per tag what the
      # loop says once about non-finite steps (NaN is still written: a diverging loss shows).
      logging.getLogger("tensorboardX.x2num").setLevel(logging.ERROR)
      self._writer = tensorboardX.SummaryWriter(
        os.fspath(directory),
        flush_secs=FLUSH_SECS,
        filename_suffix=f".{os.getpid()}.{next(_SERIAL)}",
      )

  def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
    """One point per tag at `step` (NaN and ±inf are kept as they are)."""
    if self._writer is None:
      return
    for tag, value in scalars.items():
      self._writer.add_scalar(tag, float(value), int(step))

  def write_images(self, step: int, images: Mapping[str, np.ndarray]) -> None:
    """One picture per tag at `step`.

    Args:
      step: the step shown with the pictures.
      images: tag → (H, W, C) or (H, W) array with C in {1, 3, 4}: uint8, or float in
        [0, 1] (clipped; NaN is drawn black).
    """
    if self._writer is None:
      return
    for tag, image in images.items():
      self._writer.add_image(tag, to_uint8(image), int(step), dataformats="HWC")

  def flush(self) -> None:
    if self._writer is not None:
      self._writer.flush()

  def close(self) -> None:
    """Writes what is queued and closes the event file (a second call does nothing)."""
    if self._writer is not None:
      self._writer.close()
      self._writer = None

  def __enter__(self) -> SummaryWriter:
    return self

  def __exit__(self, *exc) -> None:
    self.close()


def to_uint8(image: np.ndarray) -> np.ndarray:
  """An image as (H, W, C) uint8; float pixels in [0, 1] are rounded to 0..255."""
  image = np.asarray(image)
  if image.ndim == 2:
    image = image[..., None]
  if image.ndim != 3 or image.shape[-1] not in (1, 3, 4):
    raise ValueError(f"an image is (H, W, C) with C in 1, 3, 4; got shape {image.shape}")
  if image.dtype == np.uint8:
    return image
  # tensorboardX would truncate x·255 without clipping: 1.001 would turn black.
  pixels = np.clip(np.nan_to_num(image.astype(np.float32), nan=0.0), 0.0, 1.0)
  return np.round(pixels * 255.0).astype(np.uint8)


def read_events(directory: str | os.PathLike) -> list:
  """The events (`tensorboardX.proto.event_pb2.Event`) of every event file in `directory`.

  Files are read in name order (by the second they were opened). Each record is framed as
  TFRecord: 8-byte length, its masked CRC-32C, the data, the data's masked CRC-32C. A last
  record cut short (a killed writer) ends its file, as in TensorBoard.

  Raises:
    ValueError: a record's checksum does not match.
  """
  from tensorboardX.proto import event_pb2
  from tensorboardX.record_writer import masked_crc32c

  events = []
  for path in sorted(pathlib.Path(directory).glob("events.out.tfevents.*")):
    data, pos = path.read_bytes(), 0
    while pos + 12 <= len(data):
      header = data[pos : pos + 8]
      end = pos + 12 + struct.unpack("<Q", header)[0]
      if end + 4 > len(data):
        break
      body = data[pos + 12 : end]
      crcs = struct.unpack("<II", data[pos + 8 : pos + 12] + data[end : end + 4])
      if crcs != (masked_crc32c(header), masked_crc32c(body)):
        raise ValueError(f"{path}: bad checksum in the record at byte {pos}")
      events.append(event_pb2.Event.FromString(body))
      pos = end + 4
  return events
