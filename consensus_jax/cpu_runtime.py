"""How glibc maps the large buffers XLA allocates on CPU hosts (the XLA compiler options for CPU
are in programs.compiler_options). Measured on the 2-core benchmark machine with `small` (see
README, Benchmarks); it does not change results.
"""
import glob
import importlib.util
import os
import platform
import sys

# glibc marks the large blocks it maps for transparent huge pages (2 MB, where the kernel allows
# them for madvise'd memory): a fresh block then faults in a few thousand pages, not ~350K.
MALLOC_TUNABLES = "glibc.malloc.hugetlb=1"
_DONE_ENV = "CONSENSUS_JAX_MALLOC_TUNED"
_BEFORE_ENV = "CONSENSUS_JAX_GLIBC_TUNABLES_BEFORE"
OPT_OUT_ENV = "CONSENSUS_JAX_MALLOC_TUNING"


# JAX's accelerator plugins and the device files of the chips each one drives. A plugin alone
# does not make an accelerator: the `tpu` extra installs libtpu on CPU hosts too, to compile TPU
# programs ahead of time (precompile).
ACCELERATOR_DEVICE_FILES = {
    "libtpu": ("/dev/accel*", "/dev/vfio/[0-9]*"),
    "jax_cuda12_plugin": ("/dev/nvidia[0-9]*",),
    "jax_cuda13_plugin": ("/dev/nvidia[0-9]*",),
    "jax_rocm60_plugin": ("/dev/kfd",),
    "jax_rocm7_plugin": ("/dev/kfd",),
}


def backend_will_be_cpu() -> bool:
  """Whether JAX's default backend will be the CPU, decided before JAX starts (starting it
  would claim the accelerator in a process about to restart): JAX_PLATFORMS if set, else
  whether no installed accelerator plugin finds its chips' device files."""
  platforms = os.environ.get("JAX_PLATFORMS", "").strip()
  if platforms:
    return platforms.split(",")[0].strip() == "cpu"
  return not any(importlib.util.find_spec(plugin) and any(glob.glob(g) for g in device_files)
                 for plugin, device_files in ACCELERATOR_DEVICE_FILES.items())


def pin_cpu_where_no_accelerator() -> None:
  """Sets JAX_PLATFORMS=cpu on a host whose installed accelerator plugins find no chips (libtpu
  from the `tpu` extra on a CPU host): JAX would otherwise probe for a TPU at start-up and log
  errors about TPU worker hostnames before falling back to the CPU. Binaries call it first."""
  if not os.environ.get("JAX_PLATFORMS", "").strip() and backend_will_be_cpu():
    os.environ["JAX_PLATFORMS"] = "cpu"


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
