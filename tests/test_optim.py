"""tinylm/optim.py: AdamW's update against its closed form, which parameters it decays, the schedule.

(AdamW and clip_grad_norm against PyTorch: tests/test_torch_oracle.py.)
"""

import numpy as np
import pytest

from tinylm import GPT, GPTConfig, Tensor
from tinylm.optim import AdamW, cosine_lr


def test_one_adamw_step_matches_its_closed_form():
    rng = np.random.default_rng(0)
    p0, g = rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
    p = Tensor(p0.copy(), requires_grad=True)
    p.grad = g.copy()
    lr, wd, eps = 0.1, 0.5, 1e-8
    AdamW([p], lr=lr, betas=(0.9, 0.99), eps=eps, weight_decay=wd).step()
    # step 1: m̂ = g, v̂ = g², so p1 = p0 (1 - lr wd) - lr g / (|g| + eps)
    np.testing.assert_allclose(p.numpy(), p0 * (1 - lr * wd) - lr * g / (np.abs(g) + eps), rtol=1e-12)


def test_adamw_does_not_decay_biases_and_gains_of_a_model():
    model = GPT(GPTConfig(vocab_size=5, block_size=4, n_layer=1, n_head=1, n_embd=4), seed=0)
    before = {n: p.numpy() for n, p in model.named_parameters()}
    for p in model.parameters():
        p.grad = np.zeros_like(p.data)  # no gradient: only weight decay moves a parameter
    AdamW(model, lr=0.1, weight_decay=0.5).step()
    for name, p in model.named_parameters():
        factor = 0.95 if p.ndim >= 2 else 1.0
        np.testing.assert_allclose(p.numpy(), before[name] * factor, rtol=1e-6, err_msg=name)


@pytest.mark.parametrize("step, want", [
    (0, 0.1), (4, 0.5),           # warmup: lr (step + 1) / (warmup + 1)
    (9, 1.0), (59, 0.55),         # cosine: min + (1 + cos(pi r)) / 2 (lr - min), r = 0 and 1/2
    (109, 0.1), (500, 0.1),       # after decay_iters: min_lr
])
def test_cosine_schedule_at_hand_computed_steps(step, want):
    assert cosine_lr(step, lr=1.0, min_lr=0.1, warmup_iters=9, decay_iters=109) == pytest.approx(want)
