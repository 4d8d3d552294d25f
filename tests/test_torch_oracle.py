"""PyTorch as an oracle (optional: skipped without torch): every primitive, the whole GPT, AdamW, clipping.

Everything runs in float64, so the two implementations must agree to rounding:
each primitive's output and input gradients through one helper (``oracle``);
the GPT's loss and every parameter gradient to 1e-5 relative, against a nanoGPT-style
PyTorch model written here and loaded with tinylm's weights.
"""

import math

import numpy as np
import pytest

from tinylm import GPT, GPTConfig, Tensor, ops
from tinylm.optim import AdamW, clip_grad_norm

torch = pytest.importorskip("torch")
F = torch.nn.functional

rng = np.random.default_rng(0)


def randn(*shape):
    return rng.standard_normal(shape)


def oracle(tinylm_fn, torch_fn, *inputs, rtol=1e-9, atol=1e-12):
    """Same float64 inputs, same upstream gradient: outputs and input gradients must agree."""
    ours = [Tensor(a, requires_grad=True) if a.dtype.kind == "f" else a for a in inputs]
    theirs = [torch.tensor(a, requires_grad=a.dtype.kind == "f") for a in inputs]
    out, out_t = tinylm_fn(*ours), torch_fn(*theirs)
    outs = list(out) if isinstance(out, (list, tuple)) else [out]
    outs_t = list(out_t) if isinstance(out_t, (list, tuple)) else [out_t]
    assert len(outs) == len(outs_t)
    for i, (o, t) in enumerate(zip(outs, outs_t)):
        np.testing.assert_allclose(o.numpy(), t.detach().numpy(), rtol=rtol, atol=atol,
                                   err_msg=f"output {i}")
    upstream = [randn(*o.shape) for o in outs]
    total = sum((o * Tensor(u)).sum() for o, u in zip(outs, upstream))
    total.backward()
    sum((t * torch.tensor(u)).sum() for t, u in zip(outs_t, upstream)).backward()
    for i, (a, t) in enumerate(zip(ours, theirs)):
        if isinstance(a, Tensor):
            np.testing.assert_allclose(a.grad, t.grad.numpy(), rtol=rtol, atol=atol,
                                       err_msg=f"gradient of input {i}")


A, B, ROW = randn(3, 4), randn(2, 3, 4), randn(1, 4)
POS = rng.uniform(0.5, 2.0, (3, 4))
DISTINCT = rng.permutation(24).reshape(2, 3, 4) * 0.1
IDS = np.array([[1, 2, 2], [0, 4, 1]])
TARGETS = np.array([[1, -100, 2], [0, 3, -100]])
MASK = randn(3, 1) > 0


def torch_causal_attention(q, k, v):
    return F.scaled_dot_product_attention(q, k, v, is_causal=True)


def torch_causal_self_attention(qkv, n_head=2):
    B, T, C3 = qkv.shape
    q, k, v = (t.view(B, T, n_head, -1).transpose(1, 2) for t in qkv.split(C3 // 3, dim=2))
    return torch_causal_attention(q, k, v).transpose(1, 2).reshape(B, T, C3 // 3)


CASES = {
    "add": (ops.add, torch.add, (B, ROW)),
    "sub": (ops.sub, torch.sub, (ROW, B)),
    "mul": (ops.mul, torch.mul, (B, ROW)),
    "div": (ops.div, torch.div, (B, POS)),
    "neg": (ops.neg, torch.neg, (A,)),
    "pow": (ops.pow, torch.pow, (POS, A)),
    "exp": (ops.exp, torch.exp, (A,)),
    "log": (ops.log, torch.log, (POS,)),
    "tanh": (ops.tanh, torch.tanh, (A,)),
    "matmul": (ops.matmul, torch.matmul, (B, randn(4, 5))),
    "linear": (ops.linear, lambda x, w, b: F.linear(x, w.T, b), (B, randn(4, 5), randn(5))),
    "sum": (lambda x: ops.sum(x, axis=(0, 2)), lambda x: x.sum(dim=(0, 2)), (B,)),
    "mean": (lambda x: ops.mean(x, axis=1, keepdims=True), lambda x: x.mean(1, keepdim=True), (B,)),
    "max": (lambda x: ops.max(x, axis=-1), lambda x: x.amax(-1), (DISTINCT,)),
    "softmax": (lambda x: ops.softmax(x, 1), lambda x: x.softmax(1), (B,)),
    "log_softmax": (ops.log_softmax, lambda x: x.log_softmax(-1), (B,)),
    "reshape": (lambda x: ops.reshape(x, 6, 4), lambda x: x.reshape(6, 4), (B,)),
    "transpose": (lambda x: ops.transpose(x, 2, 0, 1), lambda x: x.permute(2, 0, 1), (B,)),
    "swapaxes": (lambda x: ops.swapaxes(x, 0, 2), lambda x: x.transpose(0, 2), (B,)),
    "getitem": (lambda x: x[np.array([0, 2, 0]), 1:], lambda x: x[[0, 2, 0], 1:], (A,)),
    "embedding": (ops.embedding, lambda w, i: F.embedding(i, w), (randn(5, 3), IDS)),
    "concat": (lambda a, b: ops.concat([a, b], axis=0), lambda a, b: torch.cat([a, b], 0), (A, ROW)),
    "split": (lambda x: ops.split(x, [1, 3], axis=1), lambda x: x.split([1, 3], 1), (A,)),
    "where": (lambda a, b: ops.where(MASK, a, b), lambda a, b: torch.where(torch.tensor(MASK), a, b),
              (A, ROW)),
    "masked_fill": (lambda a: ops.masked_fill(a, MASK, -3.0),
                    lambda a: a.masked_fill(torch.tensor(MASK), -3.0), (A,)),
    "layer_norm": (ops.layer_norm, lambda x, w, b: F.layer_norm(x, (4,), w, b, 1e-5),
                   (B, randn(4), randn(4))),
    "gelu": (ops.gelu, lambda x: F.gelu(x, approximate="tanh"), (A * 3,)),
    "relu": (ops.relu, F.relu, (A,)),
    # dropout's masks come from different generators; compare the deterministic cases
    "dropout": (lambda x: ops.dropout(x, 0.5, training=False) * ops.dropout(x, 0.0),
                lambda x: F.dropout(x, 0.5, training=False) * F.dropout(x, 0.0), (A,)),
    "cross_entropy": (ops.cross_entropy,
                      lambda z, t: F.cross_entropy(z.reshape(-1, 5), t.reshape(-1), ignore_index=-100),
                      (randn(2, 3, 5), TARGETS)),
    "causal_self_attention": (lambda qkv: ops.causal_self_attention(qkv, 2),
                              torch_causal_self_attention, (randn(2, 5, 18),)),
}


def test_every_primitive_has_an_oracle_case():
    assert set(ops.__all__) == set(CASES)


@pytest.mark.parametrize("name", sorted(CASES))
def test_primitive_matches_pytorch(name):
    ours, theirs, inputs = CASES[name]
    oracle(ours, theirs, *inputs)


# ---- the whole GPT, nanoGPT-style in PyTorch ------------------------------------------------------

class TorchAttention(torch.nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.n_head = cfg.n_head
        self.c_attn = torch.nn.Linear(cfg.n_embd, 3 * cfg.n_embd, bias=cfg.bias, dtype=torch.float64)
        self.c_proj = torch.nn.Linear(cfg.n_embd, cfg.n_embd, bias=cfg.bias, dtype=torch.float64)

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)       # (B, nh, T, hs)
        return self.c_proj(y.transpose(1, 2).contiguous().view(B, T, C))


class TorchBlock(torch.nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.ln_1 = torch.nn.LayerNorm(cfg.n_embd, dtype=torch.float64)
        self.attn = TorchAttention(cfg)
        self.ln_2 = torch.nn.LayerNorm(cfg.n_embd, dtype=torch.float64)
        self.mlp = torch.nn.ModuleDict(dict(
            c_fc=torch.nn.Linear(cfg.n_embd, 4 * cfg.n_embd, bias=cfg.bias, dtype=torch.float64),
            c_proj=torch.nn.Linear(4 * cfg.n_embd, cfg.n_embd, bias=cfg.bias, dtype=torch.float64)))

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp.c_proj(F.gelu(self.mlp.c_fc(self.ln_2(x)), approximate="tanh"))


class TorchGPT(torch.nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.wte = torch.nn.Embedding(cfg.vocab_size, cfg.n_embd, dtype=torch.float64)
        self.wpe = torch.nn.Embedding(cfg.block_size, cfg.n_embd, dtype=torch.float64)
        self.blocks = torch.nn.ModuleList(TorchBlock(cfg) for _ in range(cfg.n_layer))
        self.ln_f = torch.nn.LayerNorm(cfg.n_embd, dtype=torch.float64)

    def forward(self, idx, targets):
        x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1]))
        for block in self.blocks:
            x = block(x)
        logits = self.ln_f(x) @ self.wte.weight.T                          # tied head
        return F.cross_entropy(logits.view(-1, logits.shape[-1]), targets.view(-1), ignore_index=-100)


def is_linear_weight(name):
    return name.endswith(".weight") and ("c_attn" in name or "c_fc" in name or "c_proj" in name)


def to_torch_layout(name, array):
    return array.T if is_linear_weight(name) else array  # tinylm Linear weights are (in, out)


@pytest.mark.parametrize("bias", [True, False])
def test_gpt_loss_and_every_gradient_match_pytorch(bias):
    cfg = GPTConfig(vocab_size=13, block_size=8, n_layer=2, n_head=2, n_embd=12, bias=bias)
    model = GPT(cfg, seed=3).to(dtype="float64")
    for p in model.parameters():  # move LayerNorm gains and biases off their trivial init
        p.data += rng.normal(0, 0.1, p.shape)
    idx = rng.integers(0, cfg.vocab_size, (3, 8))
    targets = np.where(rng.random((3, 8)) < 0.2, -100, rng.integers(0, cfg.vocab_size, (3, 8)))

    reference = TorchGPT(cfg)
    state = {n: torch.tensor(to_torch_layout(n, a)) for n, a in model.state_dict().items()}
    missing, unexpected = reference.load_state_dict(state, strict=False)
    assert not unexpected and missing == [], (missing, unexpected)

    _, loss = model(idx, targets)
    loss.backward()
    loss_t = reference(torch.tensor(idx), torch.tensor(targets))
    loss_t.backward()
    assert loss.item() == pytest.approx(loss_t.item(), rel=1e-5)
    grads_t = dict(reference.named_parameters())
    for name, p in model.named_parameters():
        want = to_torch_layout(name, grads_t[name].grad.numpy())
        np.testing.assert_allclose(p.grad, want, rtol=1e-5, atol=1e-9 * np.abs(want).max(),
                                   err_msg=name)


# ---- optimizer and clipping -----------------------------------------------------------------------

def test_adamw_steps_match_torch():
    shapes = [(3, 4), (4,)]
    ours = [Tensor(randn(*s), requires_grad=True) for s in shapes]
    theirs = [torch.tensor(p.numpy(), requires_grad=True) for p in ours]
    opt = AdamW(ours, lr=0.05, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.1)
    opt_t = torch.optim.AdamW(theirs, lr=0.05, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.1)
    for _ in range(3):  # several steps: the bias corrections change with the step count
        for p, t in zip(ours, theirs):
            g = randn(*p.shape)
            p.grad, t.grad = g.copy(), torch.tensor(g)
        opt.step()
        opt_t.step()
    for p, t in zip(ours, theirs):
        np.testing.assert_allclose(p.numpy(), t.detach().numpy(), rtol=1e-12)


@pytest.mark.parametrize("max_norm", [0.5, 100.0], ids=["clips", "leaves-alone"])
def test_clip_grad_norm_matches_torch(max_norm):
    grads = [randn(3, 4), randn(5)]
    ours = [Tensor(np.zeros_like(g), requires_grad=True) for g in grads]
    theirs = [torch.zeros(g.shape, dtype=torch.float64, requires_grad=True) for g in grads]
    for p, t, g in zip(ours, theirs, grads):
        p.grad, t.grad = g.copy(), torch.tensor(g)
    norm = clip_grad_norm(ours, max_norm)
    norm_t = torch.nn.utils.clip_grad_norm_(theirs, max_norm)
    assert float(norm) == pytest.approx(norm_t.item(), rel=1e-12)
    assert float(norm) == pytest.approx(math.sqrt(sum((g * g).sum() for g in grads)), rel=1e-12)
    for p, t in zip(ours, theirs):
        np.testing.assert_allclose(p.grad, t.grad.numpy(), rtol=1e-12)
