"""Settings that make XLA programs fast on CPU hosts: which matmul kernels XLA compiles, and how
glibc maps the large buffers XLA allocates. Both measured on the 2-core benchmark machine with
`small` (see README, Benchmarks); neither changes results beyond float rounding.
"""
import importlib.util
import os
import platform
import sys

import jax

# glibc marks the large blocks it maps for transparent huge pages (2 MB, where the kernel allows
# them for madvise'd memory): a fresh block then faults in a few thousand pages, not ~350K.
MALLOC_TUNABLES = "glibc.malloc.hugetlb=1"
_DONE_ENV = "CONSENSUS_JAX_MALLOC_TUNED"
_BEFORE_ENV = "CONSENSUS_JAX_GLIBC_TUNABLES_BEFORE"
OPT_OUT_ENV = "CONSENSUS_JAX_MALLOC_TUNING"


def compiler_options() -> dict:
  """XLA options for every program the trainer and the sampler compile: on CPU, XLA's own
  (Eigen) dots rather than its XNNPACK/YNNPACK fusions. Eigen runs the attention's batched
  matmuls up to 1.7x faster and the few-row matmuls of a decode step faster too (26 against
  36 ms a step); a `small` train step at 8 x 256 gains 4-7%. Empty on other backends."""
  if jax.default_backend() != "cpu":
    return {}
  return {"xla_cpu_experimental_ynn_fusion_type": "",
          "xla_cpu_experimental_xnn_fusion_type": ""}


# JAX's accelerator plugins: with one installed, the default backend is not the CPU.
_ACCELERATOR_PLUGINS = ("libtpu", "jax_cuda12_plugin", "jax_cuda13_plugin", "jax_rocm60_plugin",
                        "jax_rocm7_plugin")


def backend_will_be_cpu() -> bool:
  """Whether JAX's default backend will be the CPU, decided before JAX starts (starting it
  would claim the accelerator in a process about to restart): JAX_PLATFORMS if set, else no
  accelerator plugin installed."""
  platforms = os.environ.get("JAX_PLATFORMS", "").strip()
  if platforms:
    return platforms.split(",")[0].strip() == "cpu"
  return not any(importlib.util.find_spec(name) for name in _ACCELERATOR_PLUGINS)


def reexec_with_tuned_malloc() -> None:
  """Restarts this process once with MALLOC_TUNABLES added to GLIBC_TUNABLES (glibc reads them
  only at start-up). Binaries and benchmarks call it first in their main.

  XLA on CPU allocates each execution's temporary buffer afresh (1.4 GB for a `small` train step
  at 8 x 256) and glibc maps and unmaps it every step: on 4 KB pages that is ~370K page faults
  and about 1 s of kernel time per step, with huge pages ~12K faults and 0.25 s (measured here).
  Keeping freed memory in the heap instead (one arena, no mmap, no trimming) removed the faults
  too, but some steps took twice as long while the heap grew, so it is not used.

  A no-op off Linux/glibc, when GLIBC_TUNABLES already sets a malloc tunable, once done, when
  CONSENSUS_JAX_MALLOC_TUNING=0, and where the backend will not be the CPU (a TPU VM or GPU
  host: there the host does not run the programs, and a restart would only cost start-up).
  """
  if (os.environ.get(_DONE_ENV) or os.environ.get(OPT_OUT_ENV) == "0"
      or not backend_will_be_cpu()
      or sys.platform != "linux" or platform.libc_ver()[0] != "glibc"
      or "glibc.malloc" in os.environ.get("GLIBC_TUNABLES", "")):
    return
  existing = os.environ.get("GLIBC_TUNABLES")
  os.environ["GLIBC_TUNABLES"] = f"{existing}:{MALLOC_TUNABLES}" if existing else MALLOC_TUNABLES
  os.environ[_DONE_ENV] = "1"
  if existing is not None:
    os.environ[_BEFORE_ENV] = existing
  sys.stdout.flush()
  sys.stderr.flush()
  os.execv(sys.executable, sys.orig_argv)


def environ_before_restart() -> dict:
  """This process's environment with GLIBC_TUNABLES as it was before reexec_with_tuned_malloc
  (the marker stays, so a child started with it does not restart itself): for a child process
  that should run with glibc's defaults, such as a benchmark's peer."""
  env = dict(os.environ)
  if env.get(_DONE_ENV):
    if _BEFORE_ENV in env:
      env["GLIBC_TUNABLES"] = env.pop(_BEFORE_ENV)
    else:
      env.pop("GLIBC_TUNABLES", None)
  return env
