r"""A GKE JobSet that runs a binary on every host of a TPU slice; prints (or applies) its YAML.

    python -m consensus_jax.launch.gke --name=sft70b --accelerator_type=v5p-128 \
      --image=us-docker.pkg.dev/my-project/consensus-jax:abc123 \
      --model_dir=gs://my-bucket/sft70b --dry_run -- \
      --gin_file=gin_configs/runs/sft.gin --gin_file=gin_configs/models/llama2_70b.gin

One Indexed Job of `hosts` pods, one per TPU VM host (node selectors from the topology, all
chips of a host per pod). Pod 0 is the coordinator: every pod gets JAX_COORDINATOR_ADDRESS (pod
0's DNS name, which the JobSet's headless service provides), JAX_NUM_PROCESSES and its
JAX_PROCESS_ID (the Job's completion index), which the binaries read. MODEL_DIR is the
checkpoint bucket. Preemption: Kubernetes sends SIGTERM and waits the grace period, in which the
trainer saves a checkpoint and exits; the JobSet then restarts every pod (failurePolicy
maxRestarts) and the run resumes from that checkpoint. The binary's argv is a YAML list, so no
shell re-splits your flags.
"""
import argparse
import subprocess
import sys
from collections.abc import Sequence

import yaml

from consensus_jax.launch import command, topologies

COORDINATOR_PORT = 8476
JOB_NAME = "workers"


def jobset(name: str, topology: topologies.Topology, image: str, model_dir: str, binary: str,
           args: Sequence[str], max_restarts: int = 10,
           termination_grace_seconds: int = 600) -> dict:
  """The JobSet manifest as a dict (yaml.safe_dump renders it)."""
  if not model_dir.startswith("gs://"):
    raise command.LaunchError(f"--model_dir={model_dir!r}: pods share no disk; use a gs:// "
                              "bucket path")
  argv = command.binary_argv(binary, [*args, f"--gin.MODEL_DIR='{model_dir}'"],
                             multiprocess=False)
  env = [{"name": "MODEL_DIR", "value": model_dir}]
  if topology.hosts > 1:
    env += [
        {"name": "JAX_COORDINATOR_ADDRESS",
         "value": f"{name}-{JOB_NAME}-0-0.{name}:{COORDINATOR_PORT}"},
        {"name": "JAX_NUM_PROCESSES", "value": str(topology.hosts)},
        {"name": "JAX_PROCESS_ID", "valueFrom": {"fieldRef": {
            "fieldPath": "metadata.annotations['batch.kubernetes.io/job-completion-index']"}}}]
  chips = {"google.com/tpu": topology.chips_per_host}
  pod = {
      "restartPolicy": "Never",
      "terminationGracePeriodSeconds": termination_grace_seconds,
      "nodeSelector": {"cloud.google.com/gke-tpu-accelerator": topology.gke_accelerator,
                       "cloud.google.com/gke-tpu-topology": topology.gke_topology},
      "containers": [{
          "name": "consensus-jax", "image": image, "command": argv, "env": env,
          "ports": [{"containerPort": COORDINATOR_PORT}],
          "resources": {"requests": dict(chips), "limits": dict(chips)}}]}
  return {
      "apiVersion": "jobset.x-k8s.io/v1alpha2",
      "kind": "JobSet",
      "metadata": {"name": name, "annotations": {
          "alpha.jobset.sigs.k8s.io/exclusive-topology": "cloud.google.com/gke-nodepool"}},
      "spec": {
          "failurePolicy": {"maxRestarts": max_restarts},
          "network": {"enableDNSHostnames": True},
          "replicatedJobs": [{
              "name": JOB_NAME, "replicas": 1,
              "template": {"spec": {
                  "parallelism": topology.hosts, "completions": topology.hosts,
                  "completionMode": "Indexed", "backoffLimit": 0,
                  "template": {"spec": pod}}}}]}}


def main(argv: Sequence[str] | None = None) -> int:
  argv = list(sys.argv[1:] if argv is None else argv)
  ours, binary_args = command.split_at_double_dash(argv)
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--name", required=True, help="JobSet name (a DNS label)")
  parser.add_argument("--accelerator_type", required=True, help="e.g. v5p-128, v6e-16")
  parser.add_argument("--image", required=True, help="a container image with this package")
  parser.add_argument("--model_dir", required=True, help="gs:// checkpoint directory")
  parser.add_argument("--binary", default="train", choices=command.BINARIES)
  parser.add_argument("--max_restarts", type=int, default=10)
  parser.add_argument("--dry_run", action="store_true", help="print the YAML, apply nothing")
  options = parser.parse_args(ours)
  manifest = yaml.safe_dump(jobset(options.name, topologies.parse(options.accelerator_type),
                                   options.image, options.model_dir, options.binary,
                                   binary_args, options.max_restarts), sort_keys=False)
  if options.dry_run:
    print(manifest, end="")
    return 0
  subprocess.run(["kubectl", "apply", "-f", "-"], input=manifest, text=True, check=True)
  return 0


if __name__ == "__main__":
  sys.exit(main())
