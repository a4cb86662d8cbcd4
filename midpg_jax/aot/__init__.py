"""Ahead-of-time compilation of a config's train and predict steps for hardware that need not be
present (`midpg-compile`): TPU slices through compile-only libtpu, NVIDIA GPUs through the JAX
CUDA plugin's deviceless compile, N host CPU devices; and what XLA says of the result per device
(FLOPs, bytes, memory, collectives) with a roofline estimate from the chips' published peaks.

  targets.py   a target name ('v5e:4x4', 'h100:8', 'cpu:8') -> its devices and chip
  chips.py     published peak FLOP/s, HBM size and bandwidth per chip, and the roofline
  steps.py     abstract train state and batch of a config (no data read), lowered and compiled
  analysis.py  per-device cost, memory and collectives of a compiled step
  report.py    the numbers per step and device, and their table (the command: commands/compile.py)
"""
