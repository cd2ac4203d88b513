"""Faults a long run meets, against the train binary: a bad record mid-stream ends the process
(no hang), in one process and in two; SIGKILL mid-save, then an exact resume from a complete
step. (Damaged checkpoints and a second run on a live MODEL_DIR: tests/test_trainer.py.)"""
import dataclasses
import json
import re
import shutil
import subprocess
import sys
import time

import pytest

from tests import test_trainer as trainer_tests

HANG_LIMIT_S = 60  # from the bad record entering the stream to the process being gone


def _bad_round_line(rounds_dir) -> str:
  first = json.loads((rounds_dir / "train.jsonl").read_text().splitlines()[0])
  first["id"] = "appended-bad-round"
  participant = next(iter(first["agreement"]))
  candidate = next(iter(first["agreement"][participant]))
  first["agreement"][participant][candidate] = 9
  return json.dumps(first)


def _wait_for_checkpoint(model_dir, children, limit_s):
  deadline = time.time() + limit_s
  while time.time() < deadline:
    if any(p.name.isdigit() for p in (model_dir / "checkpoints").glob("*")):
      return
    if any(child.poll() is not None for child in children):
      return
    time.sleep(0.5)
  raise AssertionError(f"no checkpoint under {model_dir} within {limit_s} s")


@pytest.mark.parametrize("processes", [1, 2])
def test_a_bad_record_met_mid_stream_ends_the_run(tmp_path, data, processes):
  rounds_dir = tmp_path / "rounds"
  shutil.copytree(data.rounds_dir, rounds_dir)
  data = dataclasses.replace(data, rounds_dir=rounds_dir)
  model_dir = tmp_path / "run"
  # One device per process keeps compilation short; the fault is in the host, not the mesh.
  extra = ["--gin.TRAIN_STEPS=100000", "--gin.train.checkpoint_every_steps=2",
           "--gin.train.log_every_steps=1000", f"--gin.partitioning.make_mesh.data={processes}",
           "--gin.partitioning.make_mesh.fsdp=1", "--gin.partitioning.make_mesh.tensor=1"]
  children, logs = [], []
  port = trainer_tests._free_port()  # pylint: disable=protected-access
  for process_id in range(processes):
    flags = [] if processes == 1 else [f"--coordinator_address=127.0.0.1:{port}",
                                       f"--num_processes={processes}",
                                       f"--process_id={process_id}"]
    logs.append(open(tmp_path / f"process_{process_id}.log", "w"))
    children.append(subprocess.Popen(
        trainer_tests._binary_command(model_dir, data, *extra, *flags),  # pylint: disable=protected-access
        cwd=trainer_tests.REPO, env=trainer_tests._child_env(1),  # pylint: disable=protected-access
        stdout=logs[-1], stderr=subprocess.STDOUT))
  try:
    # Once a checkpoint is saved (orbax's threads are up), the file grows a bad record, which
    # the endless stream reads when it next starts the file over.
    _wait_for_checkpoint(model_dir, children, trainer_tests.CHILD_TIMEOUT_S)
    with open(rounds_dir / "train.jsonl", "a") as f:
      f.write(_bad_round_line(rounds_dir) + "\n")
    appended = time.time()
    for child in children:
      child.wait(timeout=max(1.0, HANG_LIMIT_S - (time.time() - appended)))
  finally:
    for child in children:
      if child.poll() is None:
        child.kill()
    for log in logs:
      log.close()
  outputs = [(tmp_path / f"process_{p}.log").read_text() for p in range(processes)]
  for child, output in zip(children, outputs):
    assert child.returncode == 1, output[-3000:]
  # The project's error, with the file and line at fault, not a tf.data op error. With two
  # processes, one may meet it while the other waits in a collective: that one ends on the
  # lost peer instead, as promptly.
  assert any("error: DataError: " in output and
             "train.jsonl:41: agreement rating 9" in output for output in outputs), (
                 outputs[0][-3000:])
  # The checkpoints written before the fault are intact.
  steps = sorted(int(p.name) for p in (model_dir / "checkpoints").glob("*") if p.name.isdigit())
  assert steps and steps[0] >= 2


def test_kill_9_mid_save_then_resume(tmp_path, data):
  """SIGKILL while checkpoints are being written (one every step, asynchronously): whatever was
  half-written, the next run resumes from a complete step and finishes."""
  model_dir = tmp_path / "run"
  extra = ["--gin.train.checkpoint_every_steps=1", "--gin.train.log_every_steps=1000",
           "--gin.partitioning.make_mesh.data=1", "--gin.partitioning.make_mesh.fsdp=1",
           "--gin.partitioning.make_mesh.tensor=1"]
  child = subprocess.Popen(
      trainer_tests._binary_command(model_dir, data, "--gin.TRAIN_STEPS=100000", *extra),  # pylint: disable=protected-access
      cwd=trainer_tests.REPO, env=trainer_tests._child_env(1),  # pylint: disable=protected-access
      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  try:
    _wait_for_checkpoint(model_dir, [child], trainer_tests.CHILD_TIMEOUT_S)
    time.sleep(3)  # several saves later, one of them in flight
  finally:
    child.kill()
    child.wait()
  committed = sorted(int(p.name) for p in (model_dir / "checkpoints").iterdir()
                     if p.name.isdigit())
  assert committed
  target = max(committed) + 2
  done = subprocess.run(
      trainer_tests._binary_command(model_dir, data, f"--gin.TRAIN_STEPS={target}", *extra),  # pylint: disable=protected-access
      cwd=trainer_tests.REPO, env=trainer_tests._child_env(1), capture_output=True, text=True,
      timeout=trainer_tests.CHILD_TIMEOUT_S)
  assert done.returncode == 0, done.stderr[-3000:]
  assert re.search(r"Restored checkpoint step \d+", done.stderr), done.stderr[-3000:]
  assert f"Done at step {target}" in done.stderr


@pytest.mark.slow
def test_local_multiprocess_script_trains_saves_and_resumes(tmp_path, data):
  """launch/local_multiprocess.sh: two processes train 2 steps, each reading only its own shard
  of the examples; both restart and resume to step 4; only process 0 logs steps.

  Slow (about 2 min: four processes started): two processes on one global batch
  (test_trainer), a second process ended by a peer's fault (above) and exact resume
  (test_trainer) are in the default suite; this adds the launcher script itself."""
  model_dir = tmp_path / "run"
  env = dict(trainer_tests._child_env(1), NUM_PROCESSES="2", DEVICES_PER_PROCESS="1")  # pylint: disable=protected-access
  for steps in (2, 4):
    env["PORT"] = str(trainer_tests._free_port())  # pylint: disable=protected-access
    done = subprocess.run(
        ["bash", "launch/local_multiprocess.sh", "--gin_file=gin_configs/runs/sft.gin",
         f"--gin_file={trainer_tests.TEST_GIN}", f"--gin.MODEL_DIR='{model_dir}'",
         f"--gin.DATA_DIR='{data.rounds_dir}'", f"--gin.VOCAB_DIR='{data.vocab_dir}'",
         f"--gin.TRAIN_STEPS={steps}", "--gin.train.checkpoint_every_steps=2",
         "--gin.train/input_pipeline.InputConfig.shard_source_per_process=True",
         "--gin.partitioning.make_mesh.data=2", "--gin.partitioning.make_mesh.fsdp=1",
         "--gin.partitioning.make_mesh.tensor=1"],
        cwd=trainer_tests.REPO, env=env, capture_output=True, text=True,
        timeout=trainer_tests.CHILD_TIMEOUT_S)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    output = done.stdout + done.stderr
    for process in (0, 1):
      assert f"process {process} reads shard {process} of 2 of consensus_sft_synthetic/train" in (
          output)
    # Step lines come from process 0 only: one per step, not two.
    assert output.count(f"step {steps}/{steps}") == 1, output[-3000:]
  assert "Restored checkpoint step 2" in output
  checkpoints = sorted(int(p.name) for p in (model_dir / "checkpoints").iterdir()
                       if p.name.isdigit())
  assert checkpoints == [2, 4]
