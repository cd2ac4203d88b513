"""Cloud TPU slice types: how many hosts, chips per host, and the GKE names for each.

Names follow Cloud TPU's accelerator types. For v4 and v5p the number counts TensorCores (two per
chip, four chips per host); for v5e (v5litepod) and v6e it counts chips (four per host in
multi-host slices; the single-host 8-chip shape holds eight).
"""
import dataclasses
import re


class TopologyError(ValueError):
  """An accelerator type this launcher does not know; the message lists the known ones."""


@dataclasses.dataclass(frozen=True)
class Topology:
  accelerator_type: str  # e.g. v5p-128
  hosts: int
  chips_per_host: int
  gke_accelerator: str  # node label cloud.google.com/gke-tpu-accelerator
  gke_topology: str  # node label cloud.google.com/gke-tpu-topology, e.g. 4x4x8

  @property
  def chips(self) -> int:
    return self.hosts * self.chips_per_host


# chips -> physical shape, as GKE names it.
_SHAPES_3D = {4: "2x2x1", 8: "2x2x2", 16: "2x2x4", 32: "2x4x4", 64: "4x4x4", 128: "4x4x8",
              256: "4x8x8", 512: "8x8x8", 1024: "8x8x16", 2048: "8x16x16", 4096: "16x16x16"}
_SHAPES_2D = {1: "1x1", 4: "2x2", 8: "2x4", 16: "4x4", 32: "4x8", 64: "8x8", 128: "8x16",
              256: "16x16"}
_FAMILIES = {  # prefix -> (number counts cores?, shapes, GKE accelerator label)
    "v4": (True, _SHAPES_3D, "tpu-v4-podslice"),
    "v5p": (True, _SHAPES_3D, "tpu-v5p-slice"),
    "v5litepod": (False, _SHAPES_2D, "tpu-v5-lite-podslice"),
    "v6e": (False, _SHAPES_2D, "tpu-v6e-slice"),
}


def parse(accelerator_type: str) -> Topology:
  match = re.fullmatch(r"(v4|v5p|v5litepod|v6e)-(\d+)", accelerator_type.strip())
  if not match:
    raise TopologyError(f"unknown accelerator type {accelerator_type!r}; expected one of "
                        f"{', '.join(f'{f}-N' for f in _FAMILIES)} (e.g. v5p-128, v6e-16)")
  family, number = match.group(1), int(match.group(2))
  counts_cores, shapes, gke_accelerator = _FAMILIES[family]
  chips = number // 2 if counts_cores else number
  if chips not in shapes or (counts_cores and number % 2):
    known = sorted(c * 2 if counts_cores else c for c in shapes)
    raise TopologyError(f"{accelerator_type}: no {family} slice of that size; sizes: {known}")
  chips_per_host = min(chips, 8 if chips == 8 and not counts_cores else 4)
  return Topology(accelerator_type, chips // chips_per_host, chips_per_host, gke_accelerator,
                  shapes[chips])
