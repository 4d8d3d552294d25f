"""The same GPT in PyTorch, as nanoGPT writes it: the anchor the benchmarks compare against.

Pre-LN blocks, fused qkv projection, causal ``scaled_dot_product_attention``,
GELU in its tanh form (as tinylm and GPT-2), tied input/output embedding,
dropout where tinylm has it (embeddings, attention and MLP outputs; none on
the attention probabilities), AdamW with decay on matrices only. ``from_tinylm`` copies a tinylm GPT's
weights, so both sides start from the same numbers and see the same batches.
Needs ``pip install torch`` (an optional dependency of the benchmarks only).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.n_head = cfg.n_head
        self.c_attn = nn.Linear(cfg.n_embd, 3 * cfg.n_embd, bias=cfg.bias)
        self.c_proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.resid_dropout = nn.Dropout(getattr(cfg, "dropout", 0.0))

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
                   for t in (q, k, v))                                    # (B, H, T, D)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.resid_dropout(self.c_proj(y.transpose(1, 2).contiguous().view(B, T, C)))


class MLP(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.c_fc = nn.Linear(cfg.n_embd, 4 * cfg.n_embd, bias=cfg.bias)
        self.c_proj = nn.Linear(4 * cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.dropout = nn.Dropout(getattr(cfg, "dropout", 0.0))

    def forward(self, x):
        return self.dropout(self.c_proj(F.gelu(self.c_fc(x), approximate="tanh")))


class Block(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.n_embd)
        self.attn = CausalSelfAttention(cfg)
        self.ln_2 = nn.LayerNorm(cfg.n_embd)
        self.mlp = MLP(cfg)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    """Token ids (B, T) -> logits (B, T, V) and the mean cross-entropy."""

    def __init__(self, cfg):
        super().__init__()
        self.wte = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.wpe = nn.Embedding(cfg.block_size, cfg.n_embd)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.n_embd)
        self.drop = nn.Dropout(getattr(cfg, "dropout", 0.0))

    def forward(self, idx, targets):
        T = idx.shape[1]
        x = self.drop(self.wte(idx) + self.wpe(torch.arange(T, device=idx.device)))
        for block in self.blocks:
            x = block(x)
        logits = self.ln_f(x) @ self.wte.weight.T                        # tied weights
        return logits, F.cross_entropy(logits.view(-1, logits.shape[-1]), targets.view(-1))


def from_tinylm(cfg, state: dict[str, np.ndarray]) -> GPT:
    """A PyTorch GPT holding the weights of a tinylm GPT's ``state_dict()``.

    tinylm's Linear weight is (in, out) (GPT-2's Conv1D); torch's is (out, in).
    """
    model = GPT(cfg)
    own = model.state_dict()
    for name, value in state.items():
        target = name
        if name.endswith(".weight") and (".c_attn." in name or ".c_proj." in name or ".c_fc." in name):
            value = value.T
        if target not in own:
            raise KeyError(f"tinylm parameter {name} has no counterpart in the PyTorch GPT")
        own[target] = torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32))
    model.load_state_dict(own)
    return model


def make_optimizer(model: GPT, lr: float, betas, weight_decay: float,
                   fused: bool = False) -> torch.optim.AdamW:
    """nanoGPT's configure_optimizers: decay matrices and embeddings, not biases and gains.

    ``fused``: one CUDA kernel for every parameter (nanoGPT's choice on a GPU); else foreach.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    if fused:
        return torch.optim.AdamW(groups, lr=lr, betas=betas, fused=True)
    return torch.optim.AdamW(groups, lr=lr, betas=betas, foreach=True)


def train_step(model: GPT, opt, x: np.ndarray, y: np.ndarray, lr: float, grad_clip: float) -> float:
    """One step as tinylm.train performs it: forward, backward, clip, AdamW at ``lr``."""
    for group in opt.param_groups:
        group["lr"] = lr
    _, loss = model(torch.from_numpy(x), torch.from_numpy(y))
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    opt.step()
    return loss.item()


@torch.no_grad()
def estimate_loss(model: GPT, sampler, iters: int) -> float:
    model.eval()
    total = sum(model(torch.from_numpy(x), torch.from_numpy(y))[1].item()
                for x, y in (sampler.next() for _ in range(iters)))
    model.train()
    return total / iters


def check_same_model(tinylm_loss: float, torch_loss: float) -> None:
    """Both models start from the same weights: their first losses must agree."""
    if not math.isclose(tinylm_loss, torch_loss, rel_tol=1e-4, abs_tol=1e-4):
        raise AssertionError(f"initial loss {torch_loss:.6f} in PyTorch but {tinylm_loss:.6f} "
                             "in tinylm: the two models differ")
