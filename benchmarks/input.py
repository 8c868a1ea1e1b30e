"""Images per second that stage 1's streaming input delivers, beside what one H200 needs.

    python benchmarks/input.py            # a few minutes on 2 cores
    python benchmarks/input.py --quick    # seconds: checks it runs

For each research config's stage-1 input (its global batch and image size;
`celeba_superres` reads the same images as `celeba64_attributes`), stage 1's streaming
input, `pipeline.StepBatches` (grain), runs with `data.workers` = 0 (threads of this
process), 1, 2 and os.cpu_count(), and the config's `data.prefetch`, and this process
takes its batches one after another as fast as they come: images per second after
`--warmup` batches (the workers' start-up is in the warm-up), the best of `--windows`
windows over `--seconds`.
Each setting runs twice: as uint8, converted on the device (`to_float=False`, stage 1's
way), and, for comparison, converted to float32 [0, 1] on the host (`to_float=True`).

The source stands in for a prepared TFDS array_record split read with
`tfds.data_source`: random access to records whose image is stored encoded, decoded per
read with PIL as TFDS's numpy path does (`np.asarray(PIL.Image.open(...))`): CelebA as
218x178x3 JPEG (quality 75), CIFAR-10 as 32x32x3 PNG, made once with PIL from
natural-looking synthetic images (1/f noise in correlated colours with a few smooth
shapes; their mean encoded size is in the table) and held in one file read with
`os.pread`. Included: reading the record's bytes (from the page cache), decoding, the
centre crop and resize (`images.crop_resize`, CelebA to 64x64), batching, grain's threads
and worker processes, the float conversion where asked. Excluded: disk or network reads
(the file is cached), array_record's chunk decompression and TFDS's parsing of the
serialised example (labels and attributes are read once, up front, in a real run),
moving the batch to the device and the training step's own host work.

The rate one H200 needs: the global batch every `step time`, where a stage-1 step's
FLOPs (`scale.stage1_flops`: XLA's count of the lowered step at the global batch, on one
device; computed here, not read from a table) run at 35% of the H200's 989 TFLOP/s
bfloat16 dense peak. A host of eight needs eight times as many.
"""

from __future__ import annotations

import argparse
import datetime
import io
import os
import pathlib
import platform
import sys
import tempfile
import time

import numpy as np
import PIL
from PIL import Image

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import scale  # noqa: E402
from timing import write_table  # noqa: E402

from lsdm_jax.data import pipeline  # noqa: E402
from lsdm_jax.data.images import LazyImages  # noqa: E402

SLOPE = 1.4  # Of the amplitude spectrum: 1/f^SLOPE.
JPEG_QUALITY = 75  # With SLOPE, about 7 kB a record: an aligned CelebA JPEG's size.
H200_PEAK = 989e12  # bfloat16 dense FLOP/s, data sheet.
MFU = 0.35
# config(s) → (TFDS name, stored (H, W, C), encoding, train split size, image_size).
INPUTS = {
  "cifar10_classcond": ("cifar10", (32, 32, 3), "PNG", 50_000, 0),
  "celeba64_attributes, celeba_superres": ("celeb_a", (218, 178, 3), "JPEG", 162_770, 64),
}


def natural_image(rng: np.random.Generator, shape: tuple[int, int, int]) -> np.ndarray:
  """A (H, W, 3) uint8 image with natural images' statistics, roughly: 1/f amplitude
  spectrum, colours correlated across channels, a few smooth-edged shapes."""
  h, w, c = shape
  fy, fx = np.fft.fftfreq(h)[:, None], np.fft.rfftfreq(w)[None]
  amplitude = np.maximum(np.hypot(fy, fx), 1.0 / max(h, w)) ** -SLOPE
  phase = rng.uniform(0, 2 * np.pi, (3, *amplitude.shape))
  noise = np.fft.irfft2(amplitude * np.exp(1j * phase), s=(h, w))
  noise = (noise - noise.mean(axis=(1, 2), keepdims=True)) / noise.std(axis=(1, 2), keepdims=True)
  mix = rng.normal(size=(3, c)) * 0.3 + 0.7  # Mostly shared luminance: correlated channels.
  image = np.einsum("khw,kc->hwc", noise, mix) * 30 + rng.uniform(60, 190, c)
  yy, xx = np.mgrid[:h, :w]
  for _ in range(4):  # Ellipses with soft edges: objects, for the coder's edges.
    cy, cx = rng.uniform(0, h), rng.uniform(0, w)
    ry, rx = rng.uniform(0.1, 0.4) * h, rng.uniform(0.1, 0.4) * w
    inside = 1.0 - np.hypot((yy - cy) / ry, (xx - cx) / rx)
    alpha = np.clip(inside * 8, 0, 1)[..., None]
    image = image * (1 - alpha) + alpha * (rng.uniform(0, 255, c) + 0.3 * image)
  return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def encode(image: np.ndarray, fmt: str) -> bytes:
  out = io.BytesIO()
  Image.fromarray(image).save(
    out, format=fmt, **({"quality": JPEG_QUALITY} if fmt == "JPEG" else {})
  )
  return out.getvalue()


class EncodedSource:
  """A random-access source of `length` records {'image', 'label'} like
  `tfds.data_source`'s: record i holds encoded image i % distinct, read from one file
  with `os.pread` and decoded with PIL on each access. Picklable (grain's workers reopen
  the file)."""

  def __init__(self, path: pathlib.Path, offsets: np.ndarray, length: int):
    self.path, self.offsets, self.length = str(path), offsets, length
    self._fd = None

  def __len__(self) -> int:
    return self.length

  def __getstate__(self):
    return {**self.__dict__, "_fd": None}

  def __getitem__(self, i: int) -> dict:
    if self._fd is None:
      self._fd = os.open(self.path, os.O_RDONLY)
    k = int(i) % (len(self.offsets) - 1)
    start, end = int(self.offsets[k]), int(self.offsets[k + 1])
    data = os.pread(self._fd, end - start, start)
    with Image.open(io.BytesIO(data)) as image:  # TFDS's numpy path, with PIL.
      pixels = np.asarray(image, dtype=np.uint8)
    return {"image": pixels, "label": np.int64(k % 10)}


def make_source(directory: pathlib.Path, shape, fmt: str, length: int, distinct: int):
  """(EncodedSource of `length` records over `distinct` encoded images, mean bytes)."""
  rng = np.random.default_rng(0)
  blobs = [encode(natural_image(rng, shape), fmt) for _ in range(distinct)]
  path = directory / f"{fmt.lower()}_{'x'.join(map(str, shape))}.records"
  path.write_bytes(b"".join(blobs))
  offsets = np.concatenate([[0], np.cumsum([len(b) for b in blobs])])
  return EncodedSource(path, offsets, length), float(np.mean([len(b) for b in blobs]))


def rate(images, batch: int, workers: int, prefetch: int, to_float: bool, args) -> float:
  """Images per second `pipeline.StepBatches` delivers after `args.warmup` batches: the
  best of `args.windows` consecutive windows of `args.seconds` / `args.windows` each (the
  cores are shared, so the best window is the closest to this input's own rate)."""
  batches = pipeline.StepBatches(
    images, batch, 0, None, 10**9, workers=workers, prefetch=prefetch, to_float=to_float
  )
  try:
    for step in range(args.warmup):
      out = batches(step)
    assert out.dtype == (np.float32 if to_float else np.uint8), out.dtype
    best, step = 0.0, args.warmup
    for _ in range(args.windows):
      first, t = step, time.perf_counter()
      while time.perf_counter() - t < args.seconds / args.windows or step < first + 2:
        batches(step)
        step += 1
      best = max(best, (step - first) * batch / (time.perf_counter() - t))
    return best
  finally:
    batches.close()


def needed_rate(name: str, batch: int, variant: str = "default") -> tuple[float, float]:
  """(stage-1 FLOPs per image, images per second one H200 consumes at MFU of its peak)."""
  if variant != "default":
    batch = scale.CONFIGS[name][0].get_config(variant).stage1.batch_size
  per_image = scale.stage1_flops(name, variant) / batch
  return per_image, MFU * H200_PEAK / per_image


def main(argv=None) -> list[dict]:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument(
    "--quick", action="store_true", help="seconds: short, 0 and 1 workers, tiny models' FLOPs"
  )
  parser.add_argument("--workers", default="", help="comma-separated (default 0,1,2,all cores)")
  parser.add_argument("--only", default="", help="inputs whose config names contain this")
  parser.add_argument("--seconds", type=float, default=0.0, help="timed per setting")
  parser.add_argument("--windows", type=int, default=3, help="timed windows: the best counts")
  parser.add_argument("--warmup", type=int, default=3, help="batches before timing")
  parser.add_argument("--note", default="", help="a sentence added to the table's header")
  parser.add_argument(
    "--before", default="", help="an earlier run's table to append, for a before/after view"
  )
  parser.add_argument("--out", default="")
  args = parser.parse_args(argv)
  args.load = os.getloadavg()[0]
  args.seconds = args.seconds or (0.5 if args.quick else 6.0)
  cores = os.cpu_count() or 1
  counts = [0, 1] if args.quick else sorted({0, 1, 2, cores})
  if args.workers:
    counts = [int(w) for w in args.workers.split(",")]
  rows = []
  with tempfile.TemporaryDirectory() as tmp:
    for names, (dataset, shape, fmt, length, size) in INPUTS.items():
      if args.only not in names:
        continue
      config = scale.CONFIGS[names.split(",")[0]][0].get_config()
      batch, prefetch = config.stage1.batch_size, config.data.prefetch
      flops, needed = needed_rate(names.split(",")[0], batch, "tiny" if args.quick else "default")
      source, mean_bytes = make_source(
        pathlib.Path(tmp), shape, fmt, length, 32 if args.quick else 256
      )
      images = LazyImages(source, size, what=dataset)
      for workers in counts:
        row = {"config": names, "dataset": dataset, "stored": f"{'x'.join(map(str, shape))} {fmt}"}
        row.update(bytes=mean_bytes, image=images.shape[1:], batch=batch, workers=workers)
        row.update(prefetch=prefetch, flops_image=flops, needed=needed)
        for to_float in (True, False):
          t = time.perf_counter()
          row["float" if to_float else "uint8"] = rate(
            images, batch, workers, prefetch, to_float, args
          )
          print(
            f"{names} workers={workers} to_float={to_float}: "
            f"{row['float' if to_float else 'uint8']:.0f} images/s "
            f"({time.perf_counter() - t:.0f} s)",
            flush=True,
          )
        rows.append(row)
  out = args.out or pathlib.Path(__file__).parent / "results" / "input_cpu.md"
  text = table(rows, cores, args)
  if args.before:
    before = pathlib.Path(args.before).read_text().split("\n", 2)[2]  # Without its title.
    text += f"\n## Before\n\n{before}"
  write_table(text, out)
  return rows


def table(rows: list[dict], cores: int, args) -> str:
  lines = [
    "# Stage 1's streaming input: images per second (CPU)",
    "",
    f"`python benchmarks/input.py{' --quick' if args.quick else ''}` on {cores} CPU cores "
    f"({platform.processor() or platform.machine()}), Python {platform.python_version()}, "
    f"PIL {PIL.__version__}, {datetime.date.today().isoformat()}, load average "
    f"{args.load:.1f} at the start (other work shared the cores). `pipeline.StepBatches` "
    "over a source of encoded records decoded with PIL per read (see the module docstring "
    f"for what is included and excluded); after {args.warmup} warm-up batches, the best of "
    f"{args.windows} windows of {args.seconds / args.windows:.3g} s per setting. float32: "
    "batches converted on the host (`to_float=True`, for comparison); uint8: converted "
    "on the device (`to_float=False`, as stage 1 reads them). Needed: the rate one "
    f"H200 consumes at {MFU:.0%} of 989 TFLOP/s, from `scale.stage1_flops` (XLA's count of "
    "the lowered stage-1 step at the global batch); a host of eight needs 8x."
    + (" With --quick, the tiny variants' FLOPs per image." if args.quick else "")
    + (f" {args.note}" if args.note else ""),
    "",
    "| config | stored (mean bytes) | batch of | global batch | workers | prefetch "
    "| images/s float32 | images/s uint8 | GFLOP / image | needed by one H200 | uint8 / needed |",
    "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
  ]
  for r in rows:
    lines.append(
      f"| {r['config']} | {r['stored']} ({r['bytes'] / 1e3:.1f} kB) "
      f"| {'x'.join(map(str, r['image']))} | {r['batch']} | {r['workers']} | {r['prefetch']} "
      f"| {r['float']:.0f} | {r['uint8']:.0f} | {r['flops_image'] / 1e9:.1f} "
      f"| {r['needed']:.0f} | {r['uint8'] / r['needed']:.2f} |"
    )
  return "\n".join(lines) + "\n"


if __name__ == "__main__":
  main()
