"""Hypothesis strategies for testing layers: shapes, arrays, token batches, masks, configs.

    from hypothesis import given
    from tinylm.testing import strategies as tst

    @given(tst.float_arrays(tst.shapes(max_dims=3)))
    def test_my_layer(x): ...

Arrays are NumPy float64 (the toolkit's checks cast them as they need) with
values bounded by ``magnitude``: no overflow-prone draws unless you ask for a
large magnitude. Needs hypothesis: ``pip install 'tinylm[test]'``.
"""

from __future__ import annotations

try:
    from hypothesis import strategies as st
    from hypothesis.extra import numpy as hnp
except ImportError as exc:  # the toolkit's checks work without it; only the strategies need it
    raise ImportError("tinylm.testing.strategies needs hypothesis, which is not installed: "
                      "pip install 'tinylm[test]'") from exc

import numpy as np

from tinylm.models.gpt import GPTConfig

__all__ = [
    "shapes", "broadcastable_shapes", "matmul_shapes", "float_arrays", "same_shape_arrays",
    "distinct_arrays",
    "token_batches", "attention_masks", "gpt_configs", "gpt_batches",
]


def shapes(min_dims: int = 1, max_dims: int = 3, min_side: int = 1, max_side: int = 4):
    """Array shapes, small by default: finite differences cost two forward passes per element."""
    return hnp.array_shapes(min_dims=min_dims, max_dims=max_dims, min_side=min_side,
                            max_side=max_side)


def broadcastable_shapes(num_shapes: int = 2, min_dims: int = 0, max_dims: int = 3,
                         max_side: int = 4):
    """Tuples of ``num_shapes`` shapes that broadcast together (sizes of 1 and missing axes)."""
    return hnp.mutually_broadcastable_shapes(
        num_shapes=num_shapes, min_dims=min_dims, max_dims=max_dims, max_side=max_side,
    ).map(lambda drawn: drawn.input_shapes)


def matmul_shapes(max_batch_dims: int = 2, max_side: int = 4):
    """(a_shape, b_shape) pairs for a batched matmul (..., n, k) @ (..., k, m), batch axes broadcast."""
    return hnp.mutually_broadcastable_shapes(
        signature="(n,k),(k,m)->(n,m)", max_dims=max_batch_dims, max_side=max_side,
    ).map(lambda drawn: drawn.input_shapes)


def float_arrays(shape, magnitude: float = 1.0, min_abs: float = 0.0, positive: bool = False,
                 dtype=np.float64):
    """Float arrays of ``shape`` (a tuple or a strategy of shapes) with |x| <= magnitude.

    ``min_abs`` keeps values away from zero (denominators, the kink of relu);
    ``positive`` keeps them in [max(min_abs, tiny), magnitude] (log, the base of pow).
    No NaN, no infinity, no subnormals.
    """
    if not 0 <= min_abs < magnitude:
        raise ValueError(f"need 0 <= min_abs < magnitude, got min_abs {min_abs}, magnitude {magnitude}")
    width = np.dtype(dtype).itemsize * 8
    positive_part = st.floats(min_value=max(min_abs, 1e-3 * magnitude) if positive else min_abs,
                              max_value=magnitude, width=width, allow_subnormal=False)
    if positive:
        elements = positive_part
    elif min_abs > 0:
        elements = st.tuples(st.booleans(), positive_part).map(lambda s: -s[1] if s[0] else s[1])
    else:
        elements = st.floats(min_value=-magnitude, max_value=magnitude, width=width,
                             allow_subnormal=False)
    return hnp.arrays(dtype, shape, elements=elements)


def same_shape_arrays(count: int, shape=None, magnitude: float = 1.0, **bounds):
    """Tuples of ``count`` float arrays sharing one drawn shape: (x, dy), or the inputs of an
    elementwise op. ``shape``: a tuple or a strategy of shapes [``shapes()``]; the other
    arguments are ``float_arrays``'s, applied to every array."""
    if count < 1:
        raise ValueError(f"count must be at least 1, got {count}")
    shape = shapes() if shape is None else shape
    shape_strategy = shape if isinstance(shape, st.SearchStrategy) else st.just(tuple(shape))
    return shape_strategy.flatmap(lambda drawn: st.tuples(
        *(float_arrays(drawn, magnitude, **bounds) for _ in range(count))))


def distinct_arrays(shape, spacing: float = 0.1, dtype=np.float64):
    """Float arrays whose elements differ pairwise by at least ``spacing``.

    For max and other piecewise ops: finite differences across a tie or a kink
    are meaningless, so every element is kept away from every other one.
    """
    def build(shape):
        size = int(np.prod(shape))
        return st.permutations(range(size)).map(
            lambda order: ((np.asarray(order, dtype=dtype) - size / 2) * spacing).reshape(shape))
    shape_strategy = shape if isinstance(shape, st.SearchStrategy) else st.just(tuple(shape))
    return shape_strategy.flatmap(build)


def token_batches(vocab_size: int, max_batch: int = 3, max_len: int = 8, min_len: int = 1):
    """int64 token ids of shape (B, T) with 1 <= B <= max_batch, min_len <= T <= max_len."""
    shape = st.tuples(st.integers(1, max_batch), st.integers(min_len, max_len))
    return hnp.arrays(np.int64, shape, elements=st.integers(0, vocab_size - 1))


def attention_masks(T: int):
    """(T, T) boolean masks, True where a query may NOT attend to a key (as ops.masked_fill).

    The diagonal is always visible, so every query row attends to at least one key
    and the softmax over it is defined.
    """
    blocked = hnp.arrays(np.bool_, (T, T), elements=st.booleans())
    return blocked.map(lambda m: m & ~np.eye(T, dtype=bool))


@st.composite
def gpt_configs(draw, max_layer: int = 2, max_head: int = 2, max_head_dim: int = 4,
                max_vocab: int = 12, max_block: int = 8):
    """Small valid GPTConfigs (dropout 0): fast enough to build and run in every example."""
    n_head = draw(st.integers(1, max_head))
    return GPTConfig(
        vocab_size=draw(st.integers(2, max_vocab)),
        block_size=draw(st.integers(2, max_block)),
        n_layer=draw(st.integers(1, max_layer)),
        n_head=n_head,
        n_embd=n_head * draw(st.integers(1, max_head_dim)),
        dropout=0.0,
        bias=draw(st.booleans()),
    )


@st.composite
def gpt_batches(draw, configs=None, max_batch: int = 3):
    """(config, idx, targets): a small config and a batch of ids (B, T) with T <= block_size."""
    cfg = draw(configs if configs is not None else gpt_configs())
    idx = draw(token_batches(cfg.vocab_size, max_batch=max_batch, max_len=cfg.block_size))
    targets = draw(hnp.arrays(np.int64, idx.shape, elements=st.integers(0, cfg.vocab_size - 1)))
    return cfg, idx, targets
