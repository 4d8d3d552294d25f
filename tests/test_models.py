"""The GPT as a whole: causal and batch-independent on drawn configs, and able to learn."""

import numpy as np
from hypothesis import given

from tinylm import GPT, GPTConfig
from tinylm.optim import AdamW
from tinylm.testing import check_batch_independent, check_causal
from tinylm.testing import strategies as tst


@given(tst.gpt_batches())
def test_gpt_logits_at_t_ignore_tokens_after_t(batch):
    cfg, idx, _ = batch
    model = GPT(cfg, seed=1)
    check_causal(lambda idx: model(idx)[0], idx, vocab_size=cfg.vocab_size)
    check_batch_independent(lambda idx: model(idx)[0], idx, vocab_size=cfg.vocab_size)


def test_tiny_gpt_overfits_a_short_sequence():
    cfg = GPTConfig(vocab_size=8, block_size=16, n_layer=1, n_head=2, n_embd=16)
    model = GPT(cfg, seed=0)
    ids = np.random.default_rng(0).integers(0, 8, size=17)
    x, y = ids[None, :-1], ids[None, 1:]
    opt = AdamW(model, lr=2e-2, weight_decay=0.0)
    for _ in range(150):
        _, loss = model(x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert model(x, y)[1].item() < 0.05
