r"""Runs a binary on every host of a Cloud TPU VM slice, from a workstation with gcloud.

    python -m consensus_jax.launch.tpu_vm --name=my-slice --zone=us-east5-a \
      --accelerator_type=v5p-128 --dry_run -- \
      --gin_file=gin_configs/runs/sft.gin --gin_file=gin_configs/models/llama2_70b.gin \
      --gin.MODEL_DIR="'gs://my-bucket/sft70b'" --gin.partitioning.make_mesh.fsdp=-1

Creates the slice (or a queued resource, --queued) unless one of that name exists, installs the
package at one commit on every worker (`--worker=all`), then runs `python -m consensus_jax.<binary>
--multiprocess <your flags>` on all workers: jax.distributed finds the slice's hosts and the
coordinator itself. Your flags reach the binary unchanged, however they are quoted. --dry_run
prints every command instead of running it.
"""
import argparse
import dataclasses
import subprocess
import sys
from collections.abc import Sequence

from consensus_jax.launch import command, topologies

DEFAULT_RUNTIME = "v2-alpha-tpuv5"
CHECKOUT = "consensus_jax"


@dataclasses.dataclass(frozen=True)
class Slice:
  name: str
  zone: str
  topology: topologies.Topology
  project: str | None = None
  runtime_version: str = DEFAULT_RUNTIME
  queued: bool = False
  spot: bool = False

  def _where(self) -> list[str]:
    return [f"--zone={self.zone}", *([f"--project={self.project}"] if self.project else [])]

  def describe(self) -> list[str]:
    return ["gcloud", "compute", "tpus", "tpu-vm", "describe", self.name, *self._where()]

  def create(self) -> list[str]:
    spot = ["--spot"] if self.spot else []
    if self.queued:
      return ["gcloud", "compute", "tpus", "queued-resources", "create", self.name,
              f"--node-id={self.name}", *self._where(),
              f"--accelerator-type={self.topology.accelerator_type}",
              f"--runtime-version={self.runtime_version}", *spot]
    return ["gcloud", "compute", "tpus", "tpu-vm", "create", self.name, *self._where(),
            f"--accelerator-type={self.topology.accelerator_type}",
            f"--version={self.runtime_version}", *spot]

  def on_all_workers(self, script: str) -> list[str]:
    return ["gcloud", "compute", "tpus", "tpu-vm", "ssh", self.name, *self._where(),
            "--worker=all", f"--command={script}"]


def install_script(repo_url: str, commit: str) -> str:
  q = command.shell_line
  return (f"set -e; [ -d {CHECKOUT} ] || git clone -q {q([repo_url])} {CHECKOUT}; "
          f"cd {CHECKOUT} && git fetch -q origin && git checkout -q {q([commit])} && "
          "python3 -m venv .venv && . .venv/bin/activate && pip install -q -e '.[tpu]'")


def run_script(binary: str, args: Sequence[str]) -> str:
  return (f"set -e; cd {CHECKOUT} && . .venv/bin/activate && "
          + command.shell_line(command.binary_argv(binary, args)))


def plan(tpu: Slice, repo_url: str, commit: str, binary: str,
         args: Sequence[str]) -> list[tuple[str, list[str]]]:
  """(what, argv) for each step; the create step runs only where describe fails."""
  return [("describe (reuse the slice if it exists)", tpu.describe()),
          ("create (only if describe failed)", tpu.create()),
          ("install on every worker", tpu.on_all_workers(install_script(repo_url, commit))),
          (f"run {binary} on every worker", tpu.on_all_workers(run_script(binary, args)))]


def _git(*args: str) -> str:
  return subprocess.run(["git", *args], check=True, capture_output=True, text=True).stdout.strip()


def main(argv: Sequence[str] | None = None) -> int:
  argv = list(sys.argv[1:] if argv is None else argv)
  ours, binary_args = command.split_at_double_dash(argv)
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--name", required=True)
  parser.add_argument("--zone", required=True)
  parser.add_argument("--accelerator_type", required=True, help="e.g. v5p-128, v6e-16")
  parser.add_argument("--project")
  parser.add_argument("--runtime_version", default=DEFAULT_RUNTIME)
  parser.add_argument("--queued", action="store_true", help="create a queued resource")
  parser.add_argument("--spot", action="store_true")
  parser.add_argument("--binary", default="train", choices=command.BINARIES)
  parser.add_argument("--repo_url", help="default: this checkout's origin")
  parser.add_argument("--commit", help="default: this checkout's HEAD")
  parser.add_argument("--dry_run", action="store_true", help="print the commands, run nothing")
  options = parser.parse_args(ours)
  tpu = Slice(options.name, options.zone, topologies.parse(options.accelerator_type),
              options.project, options.runtime_version, options.queued, options.spot)
  repo_url = options.repo_url or _git("remote", "get-url", "origin")
  commit = options.commit or _git("rev-parse", "HEAD")
  steps = plan(tpu, repo_url, commit, options.binary, binary_args)
  print(f"# {tpu.topology.accelerator_type}: {tpu.topology.hosts} host(s) x "
        f"{tpu.topology.chips_per_host} chips")
  for what, step in steps:
    print(f"# {what}\n{command.shell_line(step)}")
  if options.dry_run:
    return 0
  exists = subprocess.run(steps[0][1], capture_output=True).returncode == 0
  for what, step in steps[1:]:
    if what.startswith("create") and exists:
      continue
    subprocess.run(step, check=True)
  return 0


if __name__ == "__main__":
  sys.exit(main())
