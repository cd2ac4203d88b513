"""The train loop: sharded steps, accumulation, exact resume, re-meshing, fine-tuning, NaN stops,
two-process runs, and the gin binary. A ~0.1M-parameter decoder on 8 simulated CPU devices."""
import functools
import math
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys

import gin
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from consensus_jax import checkpointing
from consensus_jax import gin_utils
from consensus_jax import input_pipeline
from consensus_jax import metrics_writer
from consensus_jax import optimizers
from consensus_jax import partitioning
from consensus_jax import run_lock
from consensus_jax import train_step as train_step_lib
from consensus_jax import trainer
from consensus_jax.models.config import DecoderConfig
from consensus_jax.models.decoder import Decoder
from consensus_jax.objectives.sft import SFTObjective

REPO = pathlib.Path(__file__).resolve().parent.parent
TEST_GIN = "tests/testdata/trainer_tiny.gin"
VOCAB_SIZE = 1000
# Matches tests/testdata/trainer_tiny.gin, so in-process and binary runs train the same model.
CONFIG = DecoderConfig(vocab_size=VOCAB_SIZE, num_layers=2, d_model=64, num_heads=4,
                       num_kv_heads=2, mlp_dim=128, max_seq_len=128)
LENGTHS = {"inputs": 96, "targets": 32}
BATCH_SIZE = 8
REFERENCE_STEPS = 5
MESH_2X2X2 = (2, 2, 2)
CHILD_TIMEOUT_S = 240


@pytest.fixture(scope="module", autouse=True)
def compilation_cache(tmp_path_factory):
  """Several runs here compile the same step; XLA's persistent cache makes repeats cheap."""
  names = ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs",
           "jax_persistent_cache_min_entry_size_bytes")
  previous = {name: getattr(jax.config, name) for name in names}
  jax.config.update("jax_compilation_cache_dir", str(tmp_path_factory.mktemp("xla_cache")))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
  yield
  for name, value in previous.items():
    jax.config.update(name, value)


@pytest.fixture
def registered(data):
  # Other test modules register the same task names over their own data: register ours again.
  input_pipeline.register_synthetic_tasks(str(data.rounds_dir), str(data.vocab_dir),
                                          vocab_size=VOCAB_SIZE)
  gin.clear_config()
  yield data
  gin.clear_config()


def _input(split="train", shuffle=True):
  return input_pipeline.InputConfig(task="consensus_sft_synthetic", task_feature_lengths=LENGTHS,
                                    batch_size=BATCH_SIZE, split=split, shuffle=shuffle)


def _run(model_dir, total_steps, mesh_shape=MESH_2X2X2, **overrides) -> trainer.TrainResult:
  kwargs = dict(
      model_dir=str(model_dir), objective=SFTObjective(CONFIG), train_input=_input(),
      total_steps=total_steps, mesh=partitioning.make_mesh(*mesh_shape),
      # A fixed decay length keeps the step program (and its cached compilation) the same
      # whatever total_steps a test runs to.
      make_schedule=functools.partial(optimizers.make_schedule, peak_learning_rate=3e-3,
                                      warmup_steps=1, decay_steps=5),
      make_optimizer=functools.partial(optimizers.make_optimizer, name="adamw"),
      checkpoint_every_steps=2, keep_checkpoints=None, log_every_steps=1,
      peak_flops_per_device=1e10)
  kwargs.update(overrides)
  return trainer.train(**kwargs)


def _leaves(tree):
  return [np.asarray(x) for x in jax.tree_util.tree_leaves(tree)]


def _assert_trees_equal(a, b):
  for x, y in zip(_leaves(a), _leaves(b), strict=True):
    np.testing.assert_array_equal(x, y)


def _reference_run(model_dir, total_steps=REFERENCE_STEPS, **overrides):
  # Checkpoints at 2, 4 and the end; evals at 4 and the end. Tests that compile exactly this
  # program again get it from the compilation cache.
  kwargs = dict(eval_input=_input("iid_test", shuffle=False), eval_batches=1,
                eval_every_steps=4, eval_at_start=False)
  kwargs.update(overrides)
  return _run(model_dir, total_steps, **kwargs)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, data):
  """The reference: 5 uninterrupted steps."""
  input_pipeline.register_synthetic_tasks(str(data.rounds_dir), str(data.vocab_dir),
                                          vocab_size=VOCAB_SIZE)
  model_dir = tmp_path_factory.mktemp("uninterrupted")
  return model_dir, _reference_run(model_dir)


def _copy_checkpoints(source_dir, dest_dir, steps):
  for step in steps:
    shutil.copytree(source_dir / "checkpoints" / str(step), dest_dir / "checkpoints" / str(step))


def test_two_steps_on_data_fsdp_tensor_mesh(tmp_path, registered):
  mesh = partitioning.make_mesh(*MESH_2X2X2)
  result = _reference_run(tmp_path, 2, eval_at_start=True)

  assert result.step == 2 and not result.preempted
  assert sorted(result.step_losses) == [1, 2]
  assert all(math.isfinite(loss) for loss in result.step_losses.values())
  # Params keep the layout the logical-axis rules give them, split over fsdp and tensor...
  expected = SFTObjective(CONFIG).param_shardings(mesh)
  for leaf, sharding in zip(jax.tree_util.tree_leaves(result.state.params),
                            jax.tree_util.tree_leaves(expected), strict=True):
    assert leaf.sharding.is_equivalent_to(sharding, leaf.ndim)
  specs = [str(leaf.sharding.spec) for leaf in jax.tree_util.tree_leaves(result.state.params)]
  assert any("fsdp" in spec for spec in specs) and any("tensor" in spec for spec in specs)
  # ...Adam's moments share them, and training moved the params.
  mu = optax.tree_utils.tree_get(result.state.opt_state, "mu")
  for moment, param in zip(jax.tree_util.tree_leaves(mu),
                           jax.tree_util.tree_leaves(result.state.params), strict=True):
    assert moment.sharding.is_equivalent_to(param.sharding, param.ndim)
  initial = SFTObjective(CONFIG).init_params(mesh, jax.random.key(0))
  assert not np.allclose(np.asarray(initial["embedding"]),
                         np.asarray(result.state.params["embedding"]))

  train_scalars = metrics_writer.read_scalars(tmp_path / "train")
  assert [step for step, _ in train_scalars["loss"]] == [1, 2]
  np.testing.assert_allclose([v for _, v in train_scalars["loss"]],
                             [result.step_losses[1], result.step_losses[2]], rtol=1e-6)
  assert [step for step, _ in train_scalars["mfu"]] == [2]  # step 1 compiles: not timed
  assert train_scalars["tokens_per_second"][0][1] > 0
  eval_scalars = metrics_writer.read_scalars(tmp_path / "eval")
  assert [step for step, _ in eval_scalars["loss"]] == [0, 2]
  assert eval_scalars["loss"][1][1] < eval_scalars["loss"][0][1]  # 2 steps at lr 3e-3 help
  assert checkpointing.Checkpointer(tmp_path, 2, None).all_steps() == [2]


def test_micro_batches_accumulate_to_the_full_batch_gradient(registered):
  mesh = partitioning.make_mesh(*MESH_2X2X2)
  objective = SFTObjective(CONFIG)
  converter = objective.make_feature_converter(pack=True)
  host_batch = next(input_pipeline.TrainBatches(_input(), converter, mesh))
  # Plain SGD: the update is the gradient itself, so the comparison is of gradients.
  schedule = optax.constant_schedule(1.0)
  optimizer = optax.sgd(1.0)
  param_shardings = objective.param_shardings(mesh)
  new_params = {}
  losses = {}
  for num_micro in (1, 2):
    params = objective.init_params(mesh, jax.random.key(0))
    state = train_step_lib.TrainState(step=jnp.zeros((), jnp.int32), params=params,
                               opt_state=optimizer.init(params))
    step = jax.jit(train_step_lib.make_train_step(objective, optimizer, schedule, num_micro, 0,
                                                  param_shardings))
    with jax.set_mesh(mesh):
      state, metrics = step(state, partitioning.host_local_batch_to_global(host_batch, mesh))
    new_params[num_micro], losses[num_micro] = state.params, float(metrics["loss"])
  assert losses[1] == pytest.approx(losses[2], rel=1e-5)
  for a, b in zip(_leaves(new_params[1]), _leaves(new_params[2]), strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_batches_resume_at_their_position(registered):
  mesh = partitioning.make_mesh(*MESH_2X2X2)
  converter = SFTObjective(CONFIG).make_feature_converter(pack=True)
  fresh = input_pipeline.TrainBatches(_input(), converter, mesh)
  first_four = [next(fresh) for _ in range(4)]
  resumed = input_pipeline.TrainBatches(_input(), converter, mesh, start_position=3)
  batch = next(resumed)
  assert resumed.position == 4 and fresh.position == 4
  for name, value in first_four[3].items():
    np.testing.assert_array_equal(batch[name], value)
  assert not np.array_equal(first_four[2]["decoder_target_tokens"],
                            first_four[3]["decoder_target_tokens"])
  assert input_pipeline.process_rows(mesh, BATCH_SIZE) == (0, BATCH_SIZE)


def test_sigterm_then_resume_equals_uninterrupted_run(tmp_path, registered, uninterrupted):
  _, reference = uninterrupted

  def preempt_at_step_3(step):
    if step == 3:
      os.kill(os.getpid(), signal.SIGTERM)

  stopped = _reference_run(tmp_path, step_hook=preempt_at_step_3)
  assert stopped.preempted and stopped.step == 3
  checkpoints = checkpointing.Checkpointer(tmp_path, 2, None)
  assert checkpoints.all_steps() == [2, 3]  # the preemption save comes off-schedule
  assert checkpoints.input_position(3) == 3
  checkpoints.close()

  resumed = _reference_run(tmp_path)
  assert sorted(resumed.step_losses) == [4, 5]
  # The same batches reach the same params: bit-for-bit what the uninterrupted run computed.
  assert [resumed.step_losses[s] for s in (4, 5)] == [reference.step_losses[s] for s in (4, 5)]
  _assert_trees_equal(resumed.state.params, reference.state.params)
  _assert_trees_equal(resumed.state.opt_state, reference.state.opt_state)


def _damage(step_dir: pathlib.Path, how: str) -> None:
  if how == "truncated_arrays":
    for path in (step_dir / "state").rglob("*"):
      if path.is_file() and path.parent.name == "d":
        path.write_bytes(path.read_bytes()[:7])
  elif how == "no_manifest":
    for path in (step_dir / "state").rglob("manifest.ocdbt"):
      path.unlink()
  else:  # garbled input position
    (step_dir / "input" / "metadata").write_text('{"position": 4, "st')


@pytest.mark.parametrize("how", ["truncated_arrays", "no_manifest", "garbled_input_json"])
def test_damaged_latest_checkpoint_falls_back_to_the_newest_intact_one(tmp_path, registered,
                                                                       uninterrupted, how):
  source, reference = uninterrupted
  _copy_checkpoints(source, tmp_path, [2, 4])
  _damage(tmp_path / "checkpoints" / "4", how)

  resumed = _reference_run(tmp_path)
  # Resumed from step 2, exactly as the uninterrupted run went on from there.
  assert sorted(resumed.step_losses) == [3, 4, 5]
  assert [resumed.step_losses[s] for s in (3, 4, 5)] == [
      reference.step_losses[s] for s in (3, 4, 5)]
  _assert_trees_equal(resumed.state.params, reference.state.params)
  # The damaged step was set aside (not deleted) and saved afresh.
  assert [p.name.split("-")[0] for p in (tmp_path / checkpointing.DAMAGED_DIR).iterdir()] == ["4"]
  checkpoints = checkpointing.Checkpointer(tmp_path, 2, None)
  assert checkpoints.all_steps() == [2, 4, 5]
  checkpoints.close()


def test_every_checkpoint_damaged_is_a_clear_error(tmp_path, registered, uninterrupted):
  source, _ = uninterrupted
  _copy_checkpoints(source, tmp_path, [2, 4])
  for step in (2, 4):
    _damage(tmp_path / "checkpoints" / str(step), "garbled_input_json")
  with pytest.raises(checkpointing.CheckpointError,
                     match=r"no intact checkpoint under .*checkpoints: step 4: .*; step 2: "):
    _reference_run(tmp_path)
  objective = SFTObjective(CONFIG)
  # Eval and infer: the newest readable params, or a clear error for a step asked for.
  _damage(tmp_path / "checkpoints" / "4", "truncated_arrays")
  with pytest.raises(checkpointing.CheckpointError, match="step 4 under .* cannot be read"):
    checkpointing.load_latest_params(tmp_path, objective.abstract_params(), step=4)
  with pytest.raises(checkpointing.CheckpointError, match=r"no checkpoint step 3 .*\[2, 4\]"):
    checkpointing.load_latest_params(tmp_path, objective.abstract_params(), step=3)
  _, step = checkpointing.load_latest_params(tmp_path, objective.abstract_params())
  assert step == 2


def test_a_second_run_on_a_live_model_dir_refuses_before_writing(tmp_path, registered):
  with run_lock.RunLock(tmp_path):  # another live run holds it
    with pytest.raises(run_lock.RunDirInUseError,
                       match=rf"{tmp_path} is in use by another live run \(host .* pid "
                             rf"{os.getpid()} since"):
      _reference_run(tmp_path, 2)
  assert not (tmp_path / "checkpoints").exists() and not (tmp_path / "config.gin").exists()


def test_the_run_lock_does_not_outlive_a_killed_holder(tmp_path):
  holder = subprocess.Popen(
      [sys.executable, "-c", "import sys, time; from consensus_jax import run_lock; "
       f"run_lock.RunLock({str(tmp_path)!r}).acquire(); print('held', flush=True); "
       "time.sleep(600)"], cwd=REPO, stdout=subprocess.PIPE, text=True)
  try:
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(run_lock.RunDirInUseError, match=f"pid {holder.pid} "):
      run_lock.RunLock(tmp_path).acquire()
  finally:
    holder.kill()  # SIGKILL: no cleanup runs in the holder
    holder.wait()
  run_lock.RunLock(tmp_path).acquire().release()


def test_checkpoint_restores_onto_a_different_mesh(tmp_path, registered, uninterrupted):
  source, reference = uninterrupted
  _copy_checkpoints(source, tmp_path, [4])
  other_shape = (1, 4, 2)
  objective = SFTObjective(CONFIG)
  other_mesh = partitioning.make_mesh(*other_shape)

  abstract = checkpointing.abstract_with_shardings(objective.abstract_params(),
                                                   objective.param_shardings(other_mesh))
  params = checkpointing.load_params(tmp_path / "checkpoints" / "4", abstract)
  assert params["embedding"].sharding.mesh.shape == dict(data=1, fsdp=4, tensor=2)

  # The trainer resumes step 4 -> 5 on the 1x4x2 mesh and lands where the 2x2x2 run did.
  resumed = _reference_run(tmp_path, mesh_shape=other_shape)
  assert sorted(resumed.step_losses) == [5]
  assert resumed.step_losses[5] == pytest.approx(reference.step_losses[5], rel=1e-5)
  assert resumed.eval_metrics[5]["loss"] == pytest.approx(reference.eval_metrics[5]["loss"],
                                                          rel=1e-5)
  for a, b in zip(_leaves(resumed.state.params), _leaves(reference.state.params), strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_fine_tuning_starts_from_a_params_only_checkpoint(tmp_path, registered, uninterrupted):
  source, reference = uninterrupted
  objective = SFTObjective(CONFIG)
  mesh = partitioning.make_mesh(*MESH_2X2X2)
  abstract = checkpointing.abstract_with_shardings(objective.abstract_params(),
                                                   objective.param_shardings(mesh))
  # Read out of a train checkpoint step, written back as a params-only checkpoint.
  params = checkpointing.load_params(source / "checkpoints" / "4", abstract)
  imported = checkpointing.save_params(tmp_path / "imported", params)

  result = _reference_run(tmp_path / "run", 1, init_params_from=str(imported),
                          eval_at_start=True)
  # Evaluated before its first step, the fine-tuning run has exactly step 4's params.
  assert result.eval_metrics[0]["loss"] == pytest.approx(reference.eval_metrics[4]["loss"],
                                                         rel=1e-6)
  assert sorted(result.step_losses) == [1]  # a fresh run: step and optimizer start at 0


def test_nan_loss_stops_with_step_and_keeps_last_good_checkpoint(tmp_path, registered,
                                                                 uninterrupted):
  source, _ = uninterrupted
  _copy_checkpoints(source, tmp_path, [2, 4])
  poisoned = SFTObjective(CONFIG, z_loss=float("nan"))  # every loss from here on is NaN

  with pytest.raises(trainer.NonFiniteLossError,
                     match=r"step 5: loss nan.*last good checkpoint is step 4"):
    _reference_run(tmp_path, 6, objective=poisoned)

  checkpoints = checkpointing.Checkpointer(tmp_path, 2, None)
  assert checkpoints.all_steps() == [2, 4]
  checkpoints.close()
  objective = SFTObjective(CONFIG)
  mesh = partitioning.make_mesh(*MESH_2X2X2)
  abstract = checkpointing.abstract_with_shardings(objective.abstract_params(),
                                                   objective.param_shardings(mesh))
  intact = checkpointing.load_params(tmp_path / "checkpoints" / "4", abstract)
  _assert_trees_equal(intact, checkpointing.load_params(source / "checkpoints" / "4", abstract))
  assert all(np.isfinite(leaf).all() for leaf in _leaves(intact))


@pytest.mark.parametrize("total_steps, overrides, message", [
    ("abc", {}, r"TRAIN_STEPS \(train.total_steps\) must be an integer, got 'abc' \(str\)"),
    (2.5, {}, r"TRAIN_STEPS \(train.total_steps\) must be an integer, got 2.5 \(float\)"),
    (0, {}, r"TRAIN_STEPS \(train.total_steps\) must be >= 1, got 0"),
    (2, {"checkpoint_every_steps": 0}, r"train.checkpoint_every_steps must be >= 1, got 0"),
    (2, {"log_every_steps": True}, r"train.log_every_steps must be an integer, got True"),
])
def test_bad_bindings_are_named_before_anything_runs(tmp_path, total_steps, overrides, message):
  with pytest.raises(gin_utils.BindingError, match=message):
    _run(tmp_path, total_steps, **overrides)
  assert not any(tmp_path.iterdir())


def test_feature_lengths_that_keep_only_fragments_are_refused(tmp_path, registered):
  tiny = input_pipeline.InputConfig(task="consensus_sft_synthetic", batch_size=BATCH_SIZE,
                                    task_feature_lengths={"inputs": 4, "targets": 2})
  with pytest.raises(gin_utils.BindingError,
                     match=r"TASK_FEATURE_LENGTHS\['inputs'\]=4 \(task consensus_sft_synthetic, "
                           r"split train\) keeps less than 1/8 of a typical example \(median "
                           r"\d+ tokens; 100% would be cut\)"):
    _run(tmp_path, 2, train_input=tiny)
  # The tests' own 96-token prompts cut most examples (a warning), but keep a good part of each.
  stats = input_pipeline.check_feature_lengths(_input())
  assert set(stats) == {"inputs", "targets"} and stats["inputs"]["cut_share"] > 0.5
  assert 96 < stats["inputs"]["median_length"] < 8 * 96


@pytest.mark.parametrize("kwargs, message", [
    (dict(batch_size=0), r"BATCH_SIZE \(InputConfig.batch_size\) must be >= 1, got 0"),
    (dict(task_feature_lengths={"inputs": 96, "targets": 0}),
     r"TASK_FEATURE_LENGTHS\['targets'\] must be >= 1"),
    (dict(task_feature_lengths=[96, 32]), r"TASK_FEATURE_LENGTHS .* must be a dict"),
])
def test_bad_input_bindings_are_named(kwargs, message):
  with pytest.raises(gin_utils.BindingError, match=message):
    input_pipeline.InputConfig(**{**dict(task="t", task_feature_lengths=LENGTHS,
                                         batch_size=BATCH_SIZE), **kwargs})


def test_schedules_warm_up_then_decay():
  cosine = optimizers.make_schedule(total_steps=100, peak_learning_rate=1.0, warmup_steps=10,
                                    decay="cosine", final_learning_rate_fraction=0.1)
  assert float(cosine(0)) == pytest.approx(0.1)  # the first update already moves
  assert float(cosine(9)) == pytest.approx(1.0)
  assert float(cosine(55)) == pytest.approx(0.55, abs=1e-6)  # half-way down the cosine
  assert float(cosine(100)) == pytest.approx(0.1)
  rsqrt = optimizers.make_schedule(total_steps=100, peak_learning_rate=1.0, warmup_steps=4,
                                   decay="rsqrt")
  assert float(rsqrt(3)) == pytest.approx(1.0)
  assert float(rsqrt(15)) == pytest.approx(0.5)
  with pytest.raises(ValueError, match="decay='linear'"):
    optimizers.make_schedule(total_steps=10, decay="linear")


def test_adafactor_state_shards_or_replicates_each_leaf():
  mesh = partitioning.make_mesh(*MESH_2X2X2)
  objective = SFTObjective(CONFIG)
  optimizer = optimizers.make_optimizer(optax.constant_schedule(1e-3), name="adafactor")
  abstract_params = objective.abstract_params()
  abstract_state = jax.eval_shape(optimizer.init, abstract_params)
  shardings = train_step_lib.fit_to_shapes(partitioning.optimizer_state_shardings(
      optimizer, abstract_state, objective.param_shardings(mesh), mesh), abstract_state, mesh)
  params = objective.init_params(mesh, jax.random.key(0))
  with jax.set_mesh(mesh):
    state = jax.jit(optimizer.init, out_shardings=shardings)(params)
  factored = optax.tree_utils.tree_get(state, "v_row")
  assert any(leaf.ndim < param.ndim for leaf, param in zip(
      jax.tree_util.tree_leaves(factored), jax.tree_util.tree_leaves(params), strict=True))


def test_greedy_continue_follows_the_model_argmax(registered, uninterrupted):
  from consensus_jax.data import prompts
  from consensus_jax.data import vocab as vocab_lib

  _, reference = uninterrupted
  params = reference.state.params
  vocabulary = vocab_lib.get_vocabulary(registered.vocab_dir, vocab_size=VOCAB_SIZE)
  prompt_ids = prompts.policy_prompt_ids(vocabulary, "Should cities ban cars?", ["Yes."])
  assert prompt_ids[0] == prompts.POLICY_START_ID
  from consensus_jax import serving

  generated = serving.greedy_continuations(CONFIG, params, [prompt_ids], vocabulary.eos_id,
                                           max_new_tokens=6)[0]
  assert vocabulary.eos_id not in generated
  # Teacher-forcing prompt + continuation, every continuation token is the argmax before it.
  tokens = jnp.asarray([prompt_ids + generated])
  logits = jax.jit(Decoder(CONFIG).apply)({"params": params}, tokens)
  predicted = np.argmax(np.asarray(logits[0, len(prompt_ids) - 1:]), axis=-1).tolist()
  assert predicted[:-1] == generated
  if len(generated) < 6:  # it stopped early: only because EOS came next
    assert predicted[-1] == vocabulary.eos_id


# --- The gin binary -------------------------------------------------------------------------


def _binary_command(model_dir, data, *extra):
  return [sys.executable, "-m", "consensus_jax.train",
          "--gin_file=gin_configs/runs/sft.gin", f"--gin_file={TEST_GIN}",
          f"--gin.MODEL_DIR='{model_dir}'", f"--gin.DATA_DIR='{data.rounds_dir}'",
          f"--gin.VOCAB_DIR='{data.vocab_dir}'", *extra]


def _child_env(num_devices):
  env = dict(os.environ)
  env.update(XLA_FLAGS=f"--xla_force_host_platform_device_count={num_devices}",
             JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3")
  return env


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@pytest.fixture(scope="module")
def binary_run(tmp_path_factory, data):
  """The binary, single process on 8 devices, TRAIN_STEPS overridden to 2 (the gin says 1000)."""
  model_dir = tmp_path_factory.mktemp("binary_single")
  done = subprocess.run(_binary_command(model_dir, data, "--gin.TRAIN_STEPS=2"), cwd=REPO,
                        env=_child_env(8), capture_output=True, text=True,
                        timeout=CHILD_TIMEOUT_S)
  assert done.returncode == 0, done.stderr[-3000:]
  return model_dir, done


def test_binary_applies_command_line_override_and_saves_config(binary_run):
  model_dir, done = binary_run
  assert checkpointing.Checkpointer(model_dir, 2, None).all_steps() == [2]
  assert "step 2/2" in done.stderr
  losses = metrics_writer.read_scalars(model_dir / "train")["loss"]
  assert [step for step, _ in losses] == [1, 2]
  config = (model_dir / "config.gin").read_text()
  assert "TRAIN_STEPS = 2" in config and "MODEL_DIR = " in config
  operative = (model_dir / "operative_config.gin").read_text()
  assert "train.total_steps = %TRAIN_STEPS" in operative


def test_two_processes_match_one_process_on_the_same_global_batch(tmp_path, data, binary_run):
  single_dir, _ = binary_run
  port = _free_port()
  children = []
  for process_id in range(2):
    log = open(tmp_path / f"process_{process_id}.log", "w")
    command = _binary_command(tmp_path / "run", data, "--gin.TRAIN_STEPS=2",
                              f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2",
                              f"--process_id={process_id}")
    children.append((subprocess.Popen(command, cwd=REPO, env=_child_env(4), stdout=log,
                                      stderr=subprocess.STDOUT), log))
  for child, log in children:
    try:
      child.wait(timeout=CHILD_TIMEOUT_S)
    finally:
      if child.poll() is None:
        child.kill()
      log.close()
  for process_id, (child, _) in enumerate(children):
    output = (tmp_path / f"process_{process_id}.log").read_text()
    assert child.returncode == 0, output[-3000:]
  assert "process 1 of 2, 4 local / 8 global devices" in (tmp_path / "process_1.log").read_text()

  multi = metrics_writer.read_scalars(tmp_path / "run" / "train")["loss"]
  single = metrics_writer.read_scalars(single_dir / "train")["loss"]
  assert [step for step, _ in multi] == [1, 2]
  np.testing.assert_allclose([v for _, v in multi], [v for _, v in single], rtol=1e-5)
  multi_eval = metrics_writer.read_scalars(tmp_path / "run" / "eval")["loss"]
  single_eval = metrics_writer.read_scalars(single_dir / "eval")["loss"]
  np.testing.assert_allclose([v for _, v in multi_eval], [v for _, v in single_eval], rtol=1e-5)
  assert checkpointing.Checkpointer(tmp_path / "run", 2, None).all_steps() == [2]


def test_binary_rejects_unknown_binding_by_name(tmp_path, data):
  done = subprocess.run(_binary_command(tmp_path, data, "--gin.train.no_such_setting=3"),
                        cwd=REPO, env=_child_env(1), capture_output=True, text=True,
                        timeout=CHILD_TIMEOUT_S)
  assert done.returncode != 0
  assert "no_such_setting" in done.stderr
  assert not (tmp_path / "checkpoints").exists()


def test_misspelt_macro_override_is_an_error():
  gin.clear_config()
  try:
    with pytest.raises(gin_utils.UnknownGinBindingError, match="TRAIN_STEPZ"):
      gin_utils.parse_gin(["gin_configs/runs/sft.gin", TEST_GIN], ["TRAIN_STEPZ = 3"],
                          finalize=False)
  finally:
    gin.clear_config()


def test_missing_model_dir_is_named(data):
  gin.clear_config()
  try:
    gin_utils.parse_gin(["gin_configs/runs/sft.gin", TEST_GIN],
                        [f"DATA_DIR = '{data.rounds_dir}'"], finalize=False)
    with pytest.raises(ValueError, match="MODEL_DIR"):
      trainer.train()
  finally:
    gin.clear_config()


def test_gin_importing_a_missing_objective_says_it_is_not_implemented(tmp_path):
  gin_file = tmp_path / "future.gin"
  gin_file.write_text("from consensus_jax.objectives import preference_model\n")
  gin.clear_config()
  try:
    with pytest.raises(NotImplementedError,
                       match="preference_model objective is not implemented yet"):
      gin_utils.parse_gin([str(gin_file)], [], finalize=False)
  finally:
    gin.clear_config()


def test_reward_run_gin_binds_the_reward_objective():
  gin.clear_config()
  try:
    gin_utils.parse_gin(["gin_configs/runs/reward.gin", "gin_configs/models/tiny.gin"],
                        ["MODEL_DIR = '/tmp/unused'", "TRAIN_STEPS = 7"], finalize=False)
    assert "RewardObjective" in str(gin.query_parameter("train.objective"))
    assert gin.query_parameter("%TRAIN_STEPS") == 7
  finally:
    gin.clear_config()


def test_rewrite_gin_args():
  assert gin_utils.rewrite_gin_args(
      ["prog", "--gin.MODEL_DIR='/tmp/x'", "--gin_file=a.gin", "--gin.train.seed=3"]) == [
          "prog", "--gin_bindings=MODEL_DIR = '/tmp/x'", "--gin_file=a.gin",
          "--gin_bindings=train.seed = 3"]
  with pytest.raises(gin_utils.UnknownGinBindingError, match="malformed"):
    gin_utils.rewrite_gin_args(["--gin.NO_VALUE"])


@pytest.mark.parametrize("gin_file, expected", [
    ("gin_configs/runs/reward_lists.gin", {"%RM_LOSS": "listwise",
                                           "%RM_TASK": "consensus_rm_synthetic_lists"}),
    ("gin_configs/recipes/rm_small_synthetic.gin", {"%RM_LOSS": "listwise",
                                                    "DecoderConfig.d_model": 512}),
    ("gin_configs/recipes/rm_mini_synthetic.gin", {"%RM_LOSS": "listwise",
                                                   "DecoderConfig.d_model": 256,
                                                   "DecoderConfig.num_layers": 4,
                                                   "%LEARNING_RATE": 5e-4}),
])
def test_reward_recipes_parse_and_bind_the_listwise_objective(gin_file, expected):
  gin.clear_config()
  try:
    files = [gin_file] + ([] if "recipes" in gin_file else ["gin_configs/models/tiny.gin"])
    gin_utils.parse_gin(files, ["MODEL_DIR = '/tmp/unused'"], finalize=False)
    for name, value in expected.items():
      assert gin.query_parameter(name) == value, name
  finally:
    gin.clear_config()


@pytest.mark.parametrize("study", ["head_to_head", "exclusion", "welfare"])
def test_study_gins_bind_the_eval_binarys_study_mode(study):
  import consensus_jax.eval  # noqa: F401  (registers `evaluate`, as running the binary does)

  gin.clear_config()
  try:
    gin_utils.parse_gin([f"gin_configs/runs/study_{study}.gin", "gin_configs/models/tiny.gin"],
                        ["POLICY_DIR = '/p'", "RM_DIR = '/r'", "DATA_DIR = '/d'",
                         "OUTPUT_DIR = '/o'"], finalize=False)
    assert gin.query_parameter("run_study.study") == study
    assert "run_study" in str(gin.query_parameter("evaluate.evaluation"))
  finally:
    gin.clear_config()
