"""The tables and plots of a study, from its runs' rows (`OUT/results.jsonl`, which
`experiments.study` writes from each run's `result.json`).

    python -m experiments.report OUT      # rewrites OUT/report.md and the plots

A table row is a setting: the mean ± sample standard deviation over the seeds whose run
finished (`seeds`: finished/planned). A setting with a `compare` setting gets the
difference to it at the same seed. Class-conditional FD, precision and recall are in the
domain classifier's features (`lsdm_jax.metrics.classifier`), `PCA ...` in the PCA pixel
features of `experiments.independent_classcond_eval`.
"""

from __future__ import annotations

import collections
import math
import pathlib
import sys

import numpy as np

from lsdm_jax import plots
from lsdm_jax.workdir import atomic_write

CLASSCOND = (
  ("fd", "FD ↓", "{:.2f}"),
  ("fd_ratio", "FD ratio ↓", "{:.2f}"),
  ("unpaired_fd", "FD, unpaired reference ↓", "{:.2f}"),
  ("unpaired_fd_ratio", "FD ratio, unpaired reference ↓", "{:.2f}"),
  ("accuracy", "accuracy ↑", "{:.3f}"),
  ("precision", "precision ↑", "{:.3f}"),
  ("recall", "recall ↑", "{:.3f}"),
  ("pca_fd_ratio", "PCA FD ratio ↓", "{:.2f}"),
  ("pca_accuracy", "PCA accuracy ↑", "{:.3f}"),
  ("pca_recall", "PCA recall ↑", "{:.3f}"),
  ("generate_seconds_per_1000", "s / 1,000 images", "{:.3g}"),
)
SUPERRES = (
  ("psnr", "PSNR (dB) ↑", "{:.2f}"),
  ("ssim", "SSIM ↑", "{:.3f}"),
  ("consistency", "consistency (dB) ↑", "{:.2f}"),
  ("fd", "FD ↓", "{:.1f}"),
  ("precision", "precision ↑", "{:.3f}"),
  ("recall", "recall ↑", "{:.3f}"),
  ("spread", "spread", "{:.3f}"),
  ("spread_real", "spread (real)", "{:.3f}"),
)
BOUND = tuple(
  (k, name, "{:.3g}")
  for k, name in (
    ("bound_reconstruction", "E‖D(E(y)) − y‖"),
    ("bound_latent_w1", "latent W1"),
    ("bound_latent_w1_real", "latent W1 (real floor)"),
    ("bound_lipschitz", "Lip(D)"),
    ("bound_value", "bound"),
    ("bound_data_w1", "data W1 (left-hand side)"),
  )
)
SEMI = (
  ("semi_labeller_accuracy_unpaired", "label accuracy (unpaired)", "{:.3f}"),
  ("semi_labeller_accuracy_kept", "label accuracy (kept)", "{:.3f}"),
  ("semi_coverage", "share kept", "{:.2f}"),
  ("semi_labeller_accuracy_test", "label accuracy (test)", "{:.3f}"),
)
LABELLERS = (("label_accuracy", "accuracy (all)", "{:.3f}"),) + tuple(
  col
  for t in (0.5, 0.7, 0.9)
  for col in (
    (f"label_accuracy_t{t}", f"accuracy, conf ≥ {t}", "{:.3f}"),
    (f"kept_t{t}", "kept", "{:.2f}"),
  )
)
CLAIMED_SPEED_RATIO = 50.0


def mean_std(values, fmt: str = "{:.3f}") -> str:
  """'m ± s' (sample std) of the finite values; 'm' for one value, '—' for none.

  A '+' in `fmt` (signed differences) applies to the mean only.
  """
  v = np.asarray([x for x in values if x is not None and math.isfinite(x)], np.float64)
  if len(v) == 0:
    return "—"
  if len(v) == 1:
    return fmt.format(v[0])
  return f"{fmt.format(v.mean())} ± {fmt.replace('+', '').format(v.std(ddof=1))}"


def markdown_table(head: list[str], body: list[list[str]], align: str = "") -> str:
  """A markdown table; `align` has an 'r' for each right-aligned column (default left)."""
  rule = ["---:" if a == "r" else "---" for a in align.ljust(len(head), "l")]
  lines = ["| " + " | ".join(head) + " |", "|" + "|".join(rule) + "|"]
  return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in body]) + "\n"


def jsonable(value):
  """ConfigDicts, tuples and numpy scalars as plain JSON values."""
  if hasattr(value, "to_dict"):
    value = value.to_dict()
  if isinstance(value, dict):
    return {k: jsonable(v) for k, v in value.items()}
  if isinstance(value, list | tuple):
    return [jsonable(v) for v in value]
  return value.item() if isinstance(value, np.generic) else value


def _settings(rows) -> dict[str, list[dict]]:
  out = collections.defaultdict(list)
  for r in rows:
    out[r["setting"]].append(r)
  return dict(out)


def _ok(rows):
  return [r for r in rows if r["status"] == "ok"]


def _values(rows, key):
  return [r["metrics"].get(key) for r in _ok(rows)]


def settings_table(rows, columns, delta: str | None = None) -> str:
  """One line per setting with any of `columns`; `delta`: that metric's difference to the
  `compare` setting at the same seed."""
  settings = _settings(rows)
  cols = [c for c in columns if any(v is not None for v in _values(rows, c[0]))]
  body, deltas = [], False
  for setting, cell in settings.items():
    if not any(v is not None for k, *_ in cols for v in _values(cell, k)):
      continue  # Not finished anywhere (see the failures), or without these columns.
    line = [setting, f"{len(_ok(cell))}/{len(cell)}"]
    line += [mean_std(_values(cell, k), fmt) for k, _, fmt in cols]
    if delta and cell[0].get("compare") in settings:
      other = {r["seed"]: r["metrics"].get(delta) for r in _ok(settings[cell[0]["compare"]])}
      diffs = [
        r["metrics"][delta] - other[r["seed"]]
        for r in _ok(cell)
        if other.get(r["seed"]) is not None
      ]
      line.append(mean_std(diffs, "{:+.2f}") + f" (vs {cell[0]['compare']})")
      deltas = True
    elif delta:
      line.append("")
    body.append(line)
  if not cols or not body:
    return ""
  head = (
    ["setting", "seeds"]
    + [name for _, name, _ in cols]
    + ([f"Δ{delta.upper()} (same seed)"] if deltas else [])
  )
  return markdown_table(head, [b if deltas else b[: len(head)] for b in body])


def speed_table(rows) -> tuple[str, str]:
  """(table, summary): each latent-diffusion run at its DDIM step count closest in FD to
  its reference LSDM run, both timed in one process."""
  chosen = [r for r in _ok(rows) if r.get("closest_to_reference_fd")]
  if not chosen:
    return "", "No latent-diffusion run finished, so no speed ratio was measured.\n"
  head = ["run", "reference FD", "reference s / 1,000", "DDIM steps", "diffusion FD"]
  head += ["diffusion s / 1,000", "speed ratio", "ratio without the decoder"]
  body = []
  for r in chosen:
    m = r["metrics"]
    latent = m.get("latent_speed_ratio")
    body.append(
      [r["run"], f"{m['reference_fd']:.2f}", f"{m['reference_generate_seconds_per_1000']:.3g}"]
      + [str(r["ddim_steps"]), f"{m['fd']:.2f}", f"{m['generate_seconds_per_1000']:.3g}"]
      + [f"{m['speed_ratio']:.0f}x", "—" if latent is None else f"{latent:.0f}x"]
    )
  ratios = [r["metrics"]["speed_ratio"] for r in chosen]
  verdict = "meets" if min(ratios) >= CLAIMED_SPEED_RATIO else "does not meet"
  summary = (
    f"**Speed ratio: {np.mean(ratios):.0f}x** (mean over {len(ratios)} run(s); min "
    f"{min(ratios):.0f}x, max {max(ratios):.0f}x): LSDM's one-step generation against latent "
    "diffusion in the same latent space with the same decoder, at the DDIM step count whose "
    f"FD is closest to LSDM's. The smallest ratio {verdict} the claimed "
    f"{CLAIMED_SPEED_RATIO:.0f}x. The last column takes the decoder's time (measured alone) "
    "off both.\n"
  )
  return markdown_table(head, body), summary


def markdown(rows, title: str = "Study") -> str:
  """The whole report."""
  parts = [
    f"# {title}\n",
    f"{len(_ok(rows))} of {len(rows)} rows finished; mean ± sample std over seeds.\n",
  ]
  superres = any("psnr" in r["metrics"] for r in rows)
  for heading, columns, delta in (
    ("Methods", SUPERRES if superres else CLASSCOND, "fd"),
    ("Error-bound terms (test split)", BOUND, None),
    ("Semi-supervised pseudo-labels", SEMI, None),
    ("Labellers on the unpaired latents (the share kept by confidence)", LABELLERS, None),
  ):
    table = settings_table(rows, columns, delta)
    if table:
      parts += [f"## {heading}\n", table]
  table, summary = speed_table(rows)
  if table or any(r["kind"] == "latent_diffusion" for r in rows):
    parts += ["## One step against many: generation speed\n", summary, table]
  bad = [r for r in rows if r["status"] != "ok"]
  if bad:
    body = [[r["name"], r["status"], r.get("error") or ""] for r in bad]
    parts += ["## Failed or pending runs\n", markdown_table(["run", "status", "error"], body)]
  return "\n".join(p for p in parts if p)


def save_plots(rows, out) -> list[pathlib.Path]:
  """`fd_vs_unpaired.png` and `precision_vs_unpaired.png` where the LSDM runs vary
  data.n_unpaired: one line per other setting, error bars the std over seeds."""
  lsdm = [r for r in _ok(rows) if r["kind"] == "lsdm" and "data.n_unpaired" in r["fields"]]
  if len({r["fields"]["data.n_unpaired"] for r in lsdm}) < 2:
    return []

  def rest(r):  # What tells the lines apart: the variant and the fields but n_unpaired.
    skip = ("data.n_unpaired", "seed", "data.split_seed")
    return {"variant": r.get("variant"), **{k: v for k, v in r["fields"].items() if k not in skip}}

  keys = {k for r in lsdm for k in rest(r)}
  varied = sorted(k for k in keys if len({str(rest(r).get(k)) for r in lsdm}) > 1)
  lines = collections.defaultdict(lambda: collections.defaultdict(list))
  for r in lsdm:
    label = ", ".join(f"{k}={rest(r).get(k)}" for k in varied) or "LSDM"
    lines[label][r["fields"]["data.n_unpaired"]].append(r["metrics"])
  paths = []
  for key, name in (("fd", "fd_vs_unpaired.png"), ("precision", "precision_vs_unpaired.png")):
    curves = {}
    for label, by_u in lines.items():
      vs = [[m[key] for m in by_u[u]] for u in sorted(by_u)]
      errs = [np.std(v, ddof=1) if len(v) > 1 else 0.0 for v in vs]
      curves[label] = (sorted(by_u), [np.mean(v) for v in vs], errs)
    title = f"LSDM: {key} against unpaired data (mean ± std over seeds)"
    paths.append(plots.save_lines(curves, pathlib.Path(out) / name, "unpaired images", key, title))
  return paths


def write(rows, out, title: str | None = None) -> str:
  """Writes OUT/report.md and the plots; returns the markdown."""
  text = markdown(rows, title or f"Study in {pathlib.Path(out).name}")
  atomic_write(pathlib.Path(out) / "report.md", text)
  save_plots(rows, out)
  return text


def main(argv: list[str]) -> None:
  import json

  if len(argv) != 2:
    sys.exit("usage: python -m experiments.report OUT")
  out = pathlib.Path(argv[1])
  try:
    lines = (out / "results.jsonl").read_text().splitlines()
  except OSError as e:
    sys.exit(f"error: cannot read {out / 'results.jsonl'} ({e.strerror}); run the study first")
  title = (
    (out / "report.md").read_text().splitlines()[0][2:] if (out / "report.md").exists() else None
  )
  print(write([json.loads(line) for line in lines if line], out, title), end="")


if __name__ == "__main__":
  main(sys.argv)
