"""Programs run from the checkout's root as modules (`python -m scripts.<name>`), so they import
midpg_jax and each other from the checkout without editing sys.path. Not installed with
the package: dataset generators, the at-scale preparation and pipeline benchmarks, the study
behind the training defaults."""
