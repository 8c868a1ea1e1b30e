"""Tests of lsdm_jax.loop: exact resume, skipping finished stages, fallback, NaN policy.

A toy stage (linear regression on batches that are a function of the step, noise from
`fold_in(key, step)`) keeps these fast; the real stages are exercised end to end in
tests/experiments/main_test.py.
"""

import json
import logging

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from lsdm_jax import checkpoints, loop, summaries
from lsdm_jax import config as config_lib
from lsdm_jax.errors import CheckpointError, ConfigError, NonFiniteError

TX = optax.adam(0.05)
KEY = jax.random.key(7)


def _batch(step: int) -> np.ndarray:
  rng = np.random.default_rng([3, step])  # Like stage1.batch_indices: a function of the step.
  return rng.normal(size=(8, 4)).astype(np.float32)


def _make_step(nan_at: int | None = None, scale: float = 1.0):
  """A jitted (state, x) → (state, metrics); the loss is NaN at step `nan_at`, and the
  update is multiplied by scale² (in float32, so 1e30 overflows)."""

  @jax.jit
  def step_fn(state: loop.TrainState, x):
    noise = jax.random.normal(jax.random.fold_in(KEY, state.step), (4,))

    def loss_fn(params):
      loss = jnp.mean((x @ params["w"] - x @ jnp.arange(4.0) + 0.1 * noise @ params["w"]) ** 2)
      if nan_at is not None:
        loss = jnp.where(state.step == nan_at, jnp.nan, loss)
      return loss

    loss, grads = jax.value_and_grad(loss_fn)(state.params)
    updates, opt_state = TX.update(grads, state.opt_state, state.params)
    params = jax.tree.map(lambda p, u: p + u * scale * scale, state.params, updates)
    finite = loop.all_finite(loss, grads)
    return loop.guarded_update(state, finite, params, opt_state), {"loss": loss}

  return step_fn


def _fresh() -> loop.TrainState:
  params = {"w": jnp.zeros(4)}
  return loop.TrainState.create(params, TX.init(params))


def _train(directory, *, num_steps=12, save_every=4, keep=3, step_fn=None, batch_fn=_batch, **kw):
  cfg = loop.LoopConfig("toy", num_steps, log_every=2, save_every=save_every, keep=keep, **kw)
  manager = checkpoints.make_manager(directory, save_every=save_every, keep=keep)
  try:
    meta = {"config": json.dumps({"lr": 0.05, "save_every": save_every})}
    return loop.run(cfg, _fresh(), step_fn or _make_step(), batch_fn, manager, meta)
  finally:
    manager.close()


def _w(state) -> np.ndarray:
  return np.asarray(state.params["w"])


class _Crash(Exception):
  pass


def _crash_at(step_to_crash: int):
  def batch_fn(step):
    if step == step_to_crash:
      raise _Crash
    return _batch(step)

  return batch_fn


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  state, history = _train(tmp_path_factory.mktemp("reference"))
  return state, history


def test_resume_after_a_crash_equals_an_uninterrupted_run(reference, tmp_path, caplog):
  with pytest.raises(_Crash):
    _train(tmp_path, batch_fn=_crash_at(7))  # Dies after saving step 4, before step 8.
  assert sorted(checkpoints.make_manager(tmp_path, save_every=4, keep=3).all_steps()) == [4]
  with caplog.at_level(logging.INFO):
    state, history = _train(tmp_path)
  assert "toy: resuming from step 4" in caplog.text
  np.testing.assert_array_equal(_w(state), _w(reference[0]))
  assert int(state.step) == 12
  assert [h["loss"] for h in history] == [h["loss"] for h in reference[1]]


def test_a_finished_stage_is_skipped_not_retrained(reference, tmp_path, caplog):
  _train(tmp_path)

  def must_not_run(state, batch):
    raise AssertionError("a finished stage was trained again")

  with caplog.at_level(logging.INFO):
    state, history = _train(tmp_path, step_fn=must_not_run)
  assert "finished at step 12 in an earlier run; skipping" in caplog.text
  np.testing.assert_array_equal(_w(state), _w(reference[0]))
  assert len(history) == len(reference[1])


def test_an_unreadable_newest_checkpoint_is_set_aside_and_training_resumes_exactly(
  reference, tmp_path, caplog
):
  _train(tmp_path)
  for f in (tmp_path / "12" / "state").rglob("*"):
    if f.is_file():
      f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])  # Truncate every file.
  with caplog.at_level(logging.WARNING):
    state, _ = _train(tmp_path)
  warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
  assert len(warnings) == 1 and "\n" not in warnings[0].getMessage()
  assert "toy checkpoint at step 12" in warnings[0].getMessage()
  assert "unreadable" in warnings[0].getMessage()
  np.testing.assert_array_equal(_w(state), _w(reference[0]))
  assert [
    p.name.split("-")[0] for p in (tmp_path.parent / (tmp_path.name + ".unreadable")).iterdir()
  ] == ["12"]
  manager = checkpoints.make_manager(tmp_path, save_every=4, keep=3)
  assert sorted(manager.all_steps()) == [4, 8, 12]  # Step 12 was saved again, readable.
  assert checkpoints.restore_latest(manager, checkpoints.abstract_like(_fresh()), what="t")[2] == 12
  manager.close()


def test_nonfinite_loss_stops_naming_stage_and_step_and_keeps_finite_checkpoints(tmp_path):
  with pytest.raises(NonFiniteError, match=r"^toy: .* in step 6 of 12; .*skip_nonfinite=True"):
    _train(tmp_path, step_fn=_make_step(nan_at=5))
  manager = checkpoints.make_manager(tmp_path, save_every=4, keep=3)
  assert sorted(manager.all_steps()) == [4]  # Nothing saved after the bad step.
  state, meta, _ = checkpoints.restore_latest(
    manager, checkpoints.abstract_like(_fresh()), what="toy"
  )
  manager.close()
  assert np.all(np.isfinite(_w(state))) and not meta["done"]


def test_skip_nonfinite_skips_the_bad_steps_and_finishes(tmp_path):
  state, _ = _train(tmp_path, step_fn=_make_step(nan_at=5), skip_nonfinite=True)
  assert int(state.step) == 12 and int(state.nonfinite) == 1 and int(state.first_nonfinite) == 5
  assert np.all(np.isfinite(_w(state)))


def test_an_overflowing_update_is_not_applied(tmp_path):
  # Finite loss and gradients, but parameters that overflow to inf after the update.
  with pytest.raises(NonFiniteError, match="in step 1 of"):
    _train(tmp_path, step_fn=_make_step(scale=1e30))
  assert not any(p.name.isdigit() for p in tmp_path.iterdir())


def test_rerun_after_a_nan_may_turn_on_skip_nonfinite(reference, tmp_path):
  with pytest.raises(NonFiniteError):
    _train(tmp_path, step_fn=_make_step(nan_at=5))
  state, _ = _train(tmp_path, step_fn=_make_step(nan_at=5), skip_nonfinite=True)
  assert int(state.step) == 12 and int(state.nonfinite) == 1


def test_checkpoints_of_another_config_are_refused(tmp_path):
  with pytest.raises(_Crash):
    _train(tmp_path, batch_fn=_crash_at(7))
  cfg = loop.LoopConfig("toy", 12, log_every=2, save_every=4, keep=3)
  manager = checkpoints.make_manager(tmp_path, save_every=4, keep=3)
  with pytest.raises(CheckpointError, match=r"toy.lr=0.05, not 0.1; use another --workdir"):
    loop.run(cfg, _fresh(), _make_step(), _batch, manager, {"config": json.dumps({"lr": 0.1})})
  # A field that does not change the result (how often to save) may differ.
  changed = {"config": json.dumps({"lr": 0.05, "save_every": 8})}
  state, _ = loop.run(cfg, _fresh(), _make_step(), _batch, manager, changed)
  manager.close()
  assert int(state.step) == 12


@pytest.mark.parametrize(
  "fields, message",
  [
    ({"num_steps": 0}, "toy.steps=0 must be a positive integer"),
    ({"steps_per_call": 0}, "toy.steps_per_call=0 must be a positive integer"),
    ({"keep": 0}, "toy.keep=0 must be a positive integer"),
    ({"save_every": 2.5}, "toy.save_every=2.5 must be a positive integer"),
    ({"steps_per_call": 4, "num_steps": 10}, "toy.steps=10 must be a multiple of"),
    ({"steps_per_call": 4, "log_every": 6}, "toy.log_every=6 must be a multiple of"),
  ],
)
def test_loop_config_validation_names_the_field(fields, message):
  cfg = loop.LoopConfig("toy", **{"num_steps": 12, "log_every": 4, "save_every": 4, **fields})
  with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
    cfg.validate("toy")


def test_log_steps_append_metrics_jsonl_and_tensorboard_beside_the_stage_directory(tmp_path):
  _, history = _train(tmp_path / "toy", num_steps=8)
  lines = [json.loads(s) for s in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  assert [d["step"] for d in lines] == [2, 4, 6, 8] == [h["step"] for h in history]
  assert all(d["stage"] == "toy" and np.isfinite(d["loss"]) for d in lines)
  events = {}
  for event in summaries.read_events(tmp_path / "tensorboard"):
    for v in event.summary.value:
      events.setdefault(v.tag, []).append((event.step, v.simple_value))
  for name in ("loss", "steps_per_sec"):
    want = [(d["step"], np.float32(d[name])) for d in lines]  # Events hold float32.
    assert events.pop(f"toy/{name}") == want
  assert not events


class _Stream:
  def __init__(self, tty):
    self.tty, self.text = tty, ""

  def isatty(self):
    return self.tty

  def write(self, s):
    self.text += s

  def flush(self):
    pass


def test_progress_bar_draws_only_on_a_terminal():
  for tty in (False, True):
    stream = _Stream(tty)
    bar = loop.ProgressBar("stage1", 10, width=10, stream=stream)
    bar.update(5, 2.0)
    bar.clear()
    if tty:
      assert "stage1 [#####.....] 5/10 2.0 steps/s ETA 2s" in stream.text
      assert stream.text.endswith("\r\x1b[K")
    else:
      assert stream.text == ""


def test_ema_update_warms_up_then_averages_with_the_given_decay():
  params = {"w": jnp.ones(3)}
  # Step 0: decay min(0.9, 1/10) = 0.1, so the average moves 90% of the way at once.
  ema = loop.ema_update({"w": jnp.zeros(3)}, params, 0.9, jnp.int32(0))
  np.testing.assert_allclose(ema["w"], 0.9, rtol=1e-6)
  # Late steps: decay 0.9 exactly; a constant target is approached geometrically.
  ema = loop.ema_update({"w": jnp.zeros(3)}, params, 0.9, jnp.int32(10_000))
  np.testing.assert_allclose(ema["w"], 0.1, rtol=1e-5)
  # Decay 0 tracks the weights exactly.
  ema = loop.ema_update({"w": jnp.zeros(3)}, {"w": jnp.arange(3.0)}, 0.0, jnp.int32(50))
  np.testing.assert_array_equal(ema["w"], jnp.arange(3.0))


def test_train_in_memory_runs_calls_of_steps_per_call_the_last_one_shorter():
  calls = []

  def call(state, n):
    calls.append(n)
    return state.replace(step=state.step + n), {"loss": jnp.float32(n)}

  state, history = loop.train_in_memory("toy", _fresh(), call, steps=12, steps_per_call=5)
  assert calls == [5, 5, 2] and int(state.step) == 12
  np.testing.assert_array_equal(history["step"], [5, 10, 12])
  np.testing.assert_array_equal(history["loss"], [5.0, 5.0, 2.0])
  assert set(history) == {"step", "loss", "steps_per_sec"}


def test_train_in_memory_stops_on_a_nonfinite_step_naming_the_model():
  step = _make_step(nan_at=3)

  def call(state, n):
    metrics = {}
    for _ in range(n):
      state, metrics = step(state, _batch(int(state.step)))
    return state, metrics

  with pytest.raises(NonFiniteError, match=r"toy: .* in step 4 of 6; lower toy.learning_rate"):
    loop.train_in_memory("toy", _fresh(), call, steps=6, steps_per_call=2)


def _section(**fields):
  """An optimiser section as `config._optimizer` writes it, with `fields` changed."""
  section = config_lib.base_config().cvae
  section.update(fields)
  return section


def test_make_optimizer_is_clipping_then_adam():
  params = {"w": jnp.ones(3)}
  grads = {"w": jnp.array([30.0, 40.0, 0.0])}  # Global norm 50.
  tx = loop.make_optimizer(_section(learning_rate=0.1, grad_clip=5.0, b1=0.5, b2=0.9))
  ref = optax.chain(optax.clip_by_global_norm(5.0), optax.adam(0.1, b1=0.5, b2=0.9))
  got, _ = loop.apply_gradients(tx, grads, tx.init(params), params)
  want = optax.apply_updates(params, ref.update(grads, ref.init(params), params)[0])
  np.testing.assert_array_equal(got["w"], want["w"])
  adamw = loop.make_optimizer(_section(learning_rate=0.1, grad_clip=0.0, weight_decay=0.1))
  zero = {"w": jnp.zeros(3)}
  decayed, _ = loop.apply_gradients(adamw, zero, adamw.init(params), params)
  np.testing.assert_allclose(decayed["w"], 1.0 - 0.1 * 0.1, rtol=1e-6)  # Decay alone.


@pytest.mark.parametrize(
  "schedule, final, expected",
  [
    # 10 steps, 2 of warm-up from 0 to the peak 1.0, then the decay to final · peak.
    ("constant", 0.0, [0.0, 0.5, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]),
    ("linear", 0.1, [0.0, 0.5, 1.0, 0.8875, 0.775, 0.6625, 0.55, 0.4375, 0.325, 0.2125, 0.1]),
    ("cosine", 0.0, [0.0, 0.5, 1.0, None, None, None, None, None, None, None, 0.0]),
  ],
)
def test_learning_rate_schedules_warm_up_then_decay_to_the_final_share(schedule, final, expected):
  section = _section(learning_rate=1.0, steps=10, warmup_steps=2, schedule=schedule)
  section.final_lr_scale = final
  lr = loop.learning_rate(section)
  got = [float(lr(step)) for step in range(11)]
  for step, want in enumerate(expected):
    if want is not None:
      assert got[step] == pytest.approx(want, abs=1e-6), (schedule, step)
  assert all(a >= b for a, b in zip(got[2:], got[3:], strict=False))  # No rise after warm-up.
  assert got[6] == pytest.approx({"constant": 1.0, "linear": 0.55, "cosine": 0.5}[schedule], 1e-5)


def test_a_constant_rate_without_warm_up_is_a_plain_number():
  assert loop.learning_rate(_section(learning_rate=0.3, warmup_steps=0)) == 0.3
  assert loop.learning_rate(_section(learning_rate=0.3), peak=0.7) == 0.7


@pytest.mark.parametrize(
  ("value", "expected"), [(None, True), ("", True), ("0", False), ("1", True), (" 0 ", False)]
)
def test_cpu_workarounds_follow_the_backend_unless_the_environment_says(
  value, expected, monkeypatch
):
  assert jax.default_backend() == "cpu"  # tests/conftest.py
  if value is None:
    monkeypatch.delenv(loop.CPU_WORKAROUNDS_ENV, raising=False)
  else:
    monkeypatch.setenv(loop.CPU_WORKAROUNDS_ENV, value)
  assert loop.cpu_workarounds() is expected
  assert loop.conditional_update(True) is expected
  assert loop.conditional_update(False) is False


def test_cpu_workarounds_reject_another_value_in_one_line(monkeypatch):
  monkeypatch.setenv(loop.CPU_WORKAROUNDS_ENV, "off")
  with pytest.raises(ConfigError, match="LSDM_JAX_CPU_WORKAROUNDS='off' must be 0") as e:
    loop.cpu_workarounds()
  assert "\n" not in str(e.value)
