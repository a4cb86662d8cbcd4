"""Published peak numbers of the chips `midpg-compile` targets, and the roofline estimate of a
step from them (docs/distributed.md lists the same table with its sources)."""

from __future__ import annotations

import dataclasses

GB, GiB = 1e9, 2 ** 30


@dataclasses.dataclass(frozen=True)
class Chip:
  name: str
  bf16_flops: float  # peak dense bf16 FLOP/s per chip
  hbm_bytes: float  # HBM per chip (Google's TPU pages give GiB, NVIDIA's GB)
  hbm_bandwidth: float  # bytes/s per chip
  source: str


CHIPS = {c.name: c for c in (
    Chip('v4', 275e12, 32 * GiB, 1200 * GB, 'https://cloud.google.com/tpu/docs/v4'),
    Chip('v5e', 197e12, 16 * GiB, 819 * GB, 'https://cloud.google.com/tpu/docs/v5e'),
    Chip('v5p', 459e12, 95 * GiB, 2765 * GB, 'https://cloud.google.com/tpu/docs/v5p'),
    Chip('v6e', 918e12, 32 * GiB, 1638 * GB, 'https://cloud.google.com/tpu/docs/v6e'),
    # NVIDIA's datasheets give bf16 Tensor Core peaks with 2:4 sparsity; these are the dense
    # halves (H100 SXM 1,979 -> 989.5 TFLOP/s; A100 624 -> 312).
    Chip('h100', 989.5e12, 80 * GB, 3.35e12,
         'https://www.nvidia.com/en-us/data-center/h100/ (H100 SXM)'),
    Chip('a100', 312e12, 80 * GB, 2.039e12,
         'https://www.nvidia.com/en-us/data-center/a100/ (A100 80GB SXM)'),
)}


def roofline_seconds(chip: Chip, flops: float, bytes_accessed: float) -> float:
  """A lower bound of one step's time on `chip`: the slower of its FLOPs at the bf16 peak and
  its HBM traffic at the peak bandwidth (no overlap loss, no communication, f32 matmuls counted
  at the bf16 rate: the real step is slower)."""
  return max(flops / chip.bf16_flops, bytes_accessed / chip.hbm_bandwidth)
