"""The project's own Python environment (.venv beside the checkout) as Bazel's Python toolchain.

Bazel runs every py_binary and py_test with the interpreter launch/setup.sh installed, so the
third-party packages (jax, flax, orbax, seqio, pytest) come from that environment, not from
Bazel-managed pip repositories; the first-party code comes from Bazel's runfiles.
"""

def _local_python_impl(repository_ctx):
    workspace_root = repository_ctx.path(Label("//:WORKSPACE")).dirname
    interpreter = workspace_root.get_child(".venv").get_child("bin").get_child("python")
    if not interpreter.exists:
        fail("no Python environment at %s: run `bash launch/setup.sh` first" % interpreter)
    repository_ctx.file("BUILD", """
load("@bazel_tools//tools/python:toolchain.bzl", "py_runtime_pair")

py_runtime(
    name = "python3_runtime",
    interpreter_path = "{interpreter}",
    python_version = "PY3",
)

py_runtime_pair(
    name = "runtime_pair",
    py3_runtime = ":python3_runtime",
)

toolchain(
    name = "toolchain",
    toolchain = ":runtime_pair",
    toolchain_type = "@bazel_tools//tools/python:toolchain_type",
)
""".format(interpreter = interpreter))

local_python = repository_rule(
    implementation = _local_python_impl,
    local = True,
    doc = "Python toolchain pointing at the checkout's .venv/bin/python.",
)
