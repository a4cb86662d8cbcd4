"""A run's metrics: `<workdir>/metrics.jsonl` and TensorBoard event files beside it.

metrics.jsonl has one row per evaluation ({'step', 'epoch', 'split': 'validation', 'train/<name>'
means since the last log, '<scenario>/<metric>'}) and, at the end, the best checkpoint's rows
('split': 'best/validation' and 'best/test').

TensorBoard (`tensorboard --logdir runs/`): the same evaluations as scalars `<split>/<scenario>/
<metric>` (AUC, logloss, calibration, ...), and every `train.log_every_steps` the training means
`train/<name>` (loss, its parts, the MI bound, model diagnostics) and `train/examples_per_s`,
written through tensorboardX when it is installed (pure Python; no TensorFlow needed). Without it
the run trains the same and says once that no event files are written.

Resuming drops what was logged after the restored checkpoint (`truncate`): those steps are run and
logged again, so nothing appears twice.
"""

from __future__ import annotations

import json
import logging
import math
import os
from typing import Mapping

from midpg_jax import metrics

log = logging.getLogger(__name__)

JSONL = 'metrics.jsonl'

try:  # optional: TensorBoard event files
  from tensorboardX import SummaryWriter as _SummaryWriter
except ImportError:  # pragma: no cover - depends on the environment
  _SummaryWriter = None


class MetricsLog:
  def __init__(self, workdir: str, enabled: bool = True):
    self.path = os.path.join(workdir, JSONL)
    self.tensorboard_dir = os.path.join(workdir, 'tensorboard')
    self.enabled = enabled
    self._writer = None
    self._purge_step = None

  # -- metrics.jsonl + TensorBoard -------------------------------------------------------------
  def evaluation(self, step: int, epoch: int | None, split: str, result: Mapping,
                 train_metrics: Mapping[str, float] | None = None) -> None:
    """One evaluation of `split` (per-scenario metrics from metrics.evaluate_predictions)."""
    if not self.enabled:
      return
    row = {'step': step, **({'epoch': epoch} if epoch is not None else {}), 'split': split,
           **{f'train/{k}': v for k, v in (train_metrics or {}).items()},
           **metrics.flat_metrics(result)}
    with open(self.path, 'a') as f:
      f.write(json.dumps(row, default=float) + '\n')
    self.scalars(step, {f'{split}/{k}': v for k, v in metrics.flat_metrics(result).items()})

  def scalars(self, step: int, values: Mapping[str, float]) -> None:
    """TensorBoard only (the training means between evaluations)."""
    writer = self._tensorboard()
    if writer is None:
      return
    for name, value in values.items():
      if isinstance(value, (int, float)) and math.isfinite(value):
        writer.add_scalar(name, float(value), step)

  def _tensorboard(self):
    if not self.enabled:
      return None
    if self._writer is None:
      if _SummaryWriter is None:
        log.warning('tensorboardX is not installed: no TensorBoard event files '
                    '(pip install tensorboardX); metrics.jsonl has the evaluations')
        self._writer = False
      else:
        # purge_step: TensorBoard hides what an earlier, interrupted session logged from there on.
        self._writer = _SummaryWriter(self.tensorboard_dir, purge_step=self._purge_step)
    return self._writer or None

  # -- resuming ----------------------------------------------------------------------------------
  def truncate(self, after_step: int) -> None:
    """Drops the rows logged after the checkpoint at `after_step` (-1: a fresh run, drop all) and
    the final best/* rows: the resumed run writes them again."""
    if not self.enabled:
      return
    self._purge_step = after_step + 1
    if not os.path.exists(self.path):
      return
    with open(self.path) as f:
      lines = f.readlines()
    keep = []
    for line in lines:
      try:
        row = json.loads(line)
      except ValueError:
        continue  # a row cut by an interruption
      if row.get('step', math.inf) <= after_step and not str(row.get('split')).startswith('best/'):
        keep.append(line if line.endswith('\n') else line + '\n')
    if len(keep) == len(lines):
      return
    tmp = self.path + '.tmp'
    with open(tmp, 'w') as f:
      f.writelines(keep)
    os.replace(tmp, self.path)

  def close(self) -> None:
    writer, self._writer = self._writer, None  # dropped even when closing fails (a full disk)
    if writer:
      writer.close()
