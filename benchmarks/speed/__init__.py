"""The speed benchmark: JAX train/predict steps against PyTorch eager and torch.compile.

Run from the checkout's root (it imports the PyTorch references of reference/, which the wheel
does not ship; torch from requirements-bench.txt, which `make` installs):

  python -m benchmarks.speed --quick             # MI-DPG, batch 1k and 4k (a few minutes)
  python -m benchmarks.speed --vocab_sweep       # also step time vs embedding-table size
  python -m benchmarks.speed --models star,mmoe,ple --batch_sizes 4096   # the zoo vs PyTorch
  python -m benchmarks.speed --suite gpu         # accelerator suite: MI-DPG + zoo, f32 and bf16

Model quality (AUC, logloss) is measured by `midpg-compare`, not here. Results: docs/speed.md.

Modules, one job each:
  cli           command line, thread settings (before JAX/torch start), which sections run
  machine       threads, device description, host RSS and device memory probes, torch handle
  jax_side      JAX contenders (MI-DPG, plain backbone, zoo) and their mixed precision
  torch_side    PyTorch contenders (reference/torch_midpg.py, reference/torch_zoo.py)
  timing        alternating repetitions and their statistics
  flops         this machine's f32 matmul rate and FLOPs per example (analytic and XLA's)
  throughput    MI-DPG section: contenders, throughput, peak memory subprocesses
  loops         the trainer's loop shape (prefetch, host syncs) and the vocabulary sweep
  zoo           zoo models against their PyTorch references
  gpu_suite     MI-DPG and the zoo at batch 4k-64k in f32 and bf16 on an accelerator
  profile       where the JAX MI-DPG train step's time goes (per-op profile) vs the matmul rate
  report        JSON, markdown and plot
"""
