"""cpu_runtime: the one-time restart with glibc malloc tunables."""
import os
import subprocess
import sys

from consensus_jax import cpu_runtime

_PROBE = ("import os, sys; from consensus_jax import cpu_runtime; "
          "print('start', flush=True); cpu_runtime.reexec_with_tuned_malloc(); "
          "print('tunables=' + os.environ.get('GLIBC_TUNABLES', ''), sys.argv[1:]); "
          "print('before=' + cpu_runtime.environ_before_restart().get('GLIBC_TUNABLES', '-'))")


def _run(extra_env):
  env = {k: v for k, v in os.environ.items()
         if k != "GLIBC_TUNABLES" and not k.startswith("CONSENSUS_JAX_")}
  env.update(extra_env)
  out = subprocess.run([sys.executable, "-c", _PROBE, "--flag=1"], env=env, check=True,
                       capture_output=True, text=True, timeout=120)
  return out.stdout.splitlines()


def test_restarts_once_with_the_tunables_and_the_same_arguments():
  lines = _run({})
  # 'start' prints before the restart and again after it; the rest runs once, restarted.
  assert lines.count("start") == 2
  assert lines[-2:] == [f"tunables={cpu_runtime.MALLOC_TUNABLES} ['--flag=1']", "before=-"]


def test_keeps_other_tunables_and_leaves_a_users_malloc_setting_alone():
  lines = _run({"GLIBC_TUNABLES": "glibc.pthread.rseq=0"})
  assert lines[-2:] == [
      f"tunables=glibc.pthread.rseq=0:{cpu_runtime.MALLOC_TUNABLES} ['--flag=1']",
      "before=glibc.pthread.rseq=0"]
  lines = _run({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"})
  assert lines == ["start", "tunables=glibc.malloc.arena_max=2 ['--flag=1']",
                   "before=glibc.malloc.arena_max=2"]


def test_opt_out():
  lines = _run({cpu_runtime.OPT_OUT_ENV: "0"})
  assert lines == ["start", "tunables= ['--flag=1']", "before=-"]


def test_no_restart_where_the_backend_is_not_the_cpu():
  # A TPU VM or GPU host: the restart would only cost start-up time.
  for platforms in ("tpu", "cuda,cpu"):
    lines = _run({"JAX_PLATFORMS": platforms})
    assert lines == ["start", "tunables= ['--flag=1']", "before=-"], platforms
  lines = _run({"JAX_PLATFORMS": "cpu"})
  assert lines.count("start") == 2


def test_an_accelerator_plugin_without_its_chips_is_a_cpu_host(monkeypatch, tmp_path):
  """libtpu from the `tpu` extra on a CPU host: the backend will be the CPU, and JAX is pinned
  to it; with the plugin's device files present it is not."""
  monkeypatch.delenv("JAX_PLATFORMS", raising=False)
  monkeypatch.setattr(cpu_runtime, "ACCELERATOR_DEVICE_FILES",
                      {"numpy": (str(tmp_path / "accel*"),)})  # an installed "plugin"
  assert cpu_runtime.backend_will_be_cpu()
  cpu_runtime.pin_cpu_where_no_accelerator()
  assert os.environ["JAX_PLATFORMS"] == "cpu"
  monkeypatch.delenv("JAX_PLATFORMS")
  (tmp_path / "accel0").write_text("")
  assert not cpu_runtime.backend_will_be_cpu()
  cpu_runtime.pin_cpu_where_no_accelerator()
  assert "JAX_PLATFORMS" not in os.environ
  monkeypatch.setattr(cpu_runtime, "ACCELERATOR_DEVICE_FILES",
                      {"no_such_plugin_here": (str(tmp_path / "accel*"),)})
  assert cpu_runtime.backend_will_be_cpu()
