"""scripts/make_aliccp_like.py: the generated Ali-CCP-format files that the at-scale runs use."""

import pyarrow.csv as pacsv

from scripts import make_aliccp_like as gen


def test_generated_labels_follow_the_hidden_model(tmp_path):
  gen.write_aliccp_like(str(tmp_path), 20_000, seed=3)
  t = pacsv.read_csv(tmp_path / 'ali_ccp_train.csv')
  assert t.num_rows == 20_000 and t.column_names == gen.HEADER
  assert pacsv.read_csv(tmp_path / 'ali_ccp_test.csv').num_rows == 2_000
  click, purchase = t['click'].to_numpy(), t['purchase'].to_numpy()
  assert 0.15 < click.mean() < 0.3 and 0.03 < purchase[click == 1].mean() < 0.1
  assert not (purchase > click).any()  # a purchase only after a click
  # Learnable: the hidden click logit separates clicks from the others (noise would give ~0).
  logit = gen.USER_EFFECT[t['205'].to_numpy()] + gen.ITEM_CLICK_EFFECT[t['206'].to_numpy()]
  assert logit[click == 1].mean() - logit[click == 0].mean() > 0.3
