"""The cluster launchers' dry runs: the commands and YAML they print for a 2-host and a 16-host
slice, with gin values that need quoting reaching the binary unchanged."""
import shlex

import pytest
import yaml

from consensus_jax.launch import command, gke, topologies, tpu_vm

TRICKY_ARGS = [
    "--gin_file=gin_configs/runs/sft.gin",
    "--gin.TASK_FEATURE_LENGTHS={'inputs': 128, 'targets': 64}",
    "--gin.MODEL_DIR='gs://bucket/run with space'",
    '--gin.train.eval_input = @eval/input_pipeline.InputConfig()',
    "--gin.NOTE=\"it's $HOME; `no` [expansion]\"",
]


@pytest.mark.parametrize("accelerator, hosts, chips, gke_accelerator, shape", [
    ("v5p-16", 2, 4, "tpu-v5p-slice", "2x2x2"),
    ("v5p-128", 16, 4, "tpu-v5p-slice", "4x4x4"),
    ("v4-8", 1, 4, "tpu-v4-podslice", "2x2x1"),
    ("v5litepod-8", 1, 8, "tpu-v5-lite-podslice", "2x4"),
    ("v6e-64", 16, 4, "tpu-v6e-slice", "8x8"),
])
def test_topologies(accelerator, hosts, chips, gke_accelerator, shape):
  topology = topologies.parse(accelerator)
  assert (topology.hosts, topology.chips_per_host) == (hosts, chips)
  assert (topology.gke_accelerator, topology.gke_topology) == (gke_accelerator, shape)


@pytest.mark.parametrize("bad", ["v5p-3", "v7-8", "tpu", "v5litepod-12"])
def test_unknown_topologies_are_named(bad):
  with pytest.raises(topologies.TopologyError, match=bad):
    topologies.parse(bad)


def _remote_argv(ssh_argv):
  script = next(a for a in ssh_argv if a.startswith("--command="))[len("--command="):]
  # What bash on each worker runs after `set -e; cd ...; . .venv/bin/activate && `.
  return shlex.split(script.split(" && ")[-1])


@pytest.mark.parametrize("accelerator, hosts", [("v5p-16", 2), ("v5p-128", 16)])
def test_tpu_vm_dry_run_prints_every_command(capsys, accelerator, hosts):
  assert tpu_vm.main(["--name=slice", "--zone=us-east5-a", f"--accelerator_type={accelerator}",
                      "--queued", "--repo_url=https://example.com/consensus_jax.git",
                      "--commit=abc123", "--dry_run", "--", *TRICKY_ARGS]) == 0
  lines = capsys.readouterr().out.splitlines()
  assert lines[0] == f"# {accelerator}: {hosts} host(s) x 4 chips"
  commands = [shlex.split(line) for line in lines if not line.startswith("#")]
  describe, create, install, run = commands
  assert describe[:5] == ["gcloud", "compute", "tpus", "tpu-vm", "describe"]
  assert create[:5] == ["gcloud", "compute", "tpus", "queued-resources", "create"]
  assert f"--accelerator-type={accelerator}" in create
  for ssh in (install, run):
    assert ssh[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "slice"]
    assert "--worker=all" in ssh
  assert "git checkout -q abc123" in next(a for a in install if a.startswith("--command="))
  # The printed line, split by a local shell and again by each worker's bash: the user's flags
  # arrive exactly as given.
  assert _remote_argv(run) == ["python", "-m", "consensus_jax.train", "--multiprocess",
                               *TRICKY_ARGS]


@pytest.mark.parametrize("accelerator, hosts", [("v5p-16", 2), ("v5p-128", 16)])
def test_gke_dry_run_prints_a_jobset(capsys, accelerator, hosts):
  assert gke.main(["--name=sft70b", f"--accelerator_type={accelerator}", "--image=img:1",
                   "--model_dir=gs://bucket/sft70b", "--dry_run", "--", *TRICKY_ARGS]) == 0
  manifest = yaml.safe_load(capsys.readouterr().out)
  assert manifest["kind"] == "JobSet" and manifest["metadata"]["name"] == "sft70b"
  assert manifest["spec"]["network"]["enableDNSHostnames"] is True
  assert manifest["spec"]["failurePolicy"]["maxRestarts"] == 10
  job = manifest["spec"]["replicatedJobs"][0]["template"]["spec"]
  assert job["parallelism"] == job["completions"] == hosts
  assert job["completionMode"] == "Indexed"
  pod = job["template"]["spec"]
  topology = topologies.parse(accelerator)
  assert pod["nodeSelector"] == {"cloud.google.com/gke-tpu-accelerator": "tpu-v5p-slice",
                                 "cloud.google.com/gke-tpu-topology": topology.gke_topology}
  assert pod["terminationGracePeriodSeconds"] >= 300  # room for the SIGTERM checkpoint save
  container = pod["containers"][0]
  assert container["resources"]["limits"] == {"google.com/tpu": 4}
  assert container["command"] == ["python", "-m", "consensus_jax.train", *TRICKY_ARGS,
                                  "--gin.MODEL_DIR='gs://bucket/sft70b'"]
  env = {e["name"]: e for e in container["env"]}
  assert env["JAX_COORDINATOR_ADDRESS"]["value"] == "sft70b-workers-0-0.sft70b:8476"
  assert env["JAX_NUM_PROCESSES"]["value"] == str(hosts)
  assert "job-completion-index" in env["JAX_PROCESS_ID"]["valueFrom"]["fieldRef"]["fieldPath"]
  assert env["MODEL_DIR"]["value"] == "gs://bucket/sft70b"


def test_launch_errors_are_named():
  with pytest.raises(command.LaunchError, match="gs:// bucket"):
    gke.jobset("x", topologies.parse("v5p-16"), "img", "/local/dir", "train", [])
  with pytest.raises(command.LaunchError, match="unknown binary 'serve'"):
    command.binary_argv("serve", [])
