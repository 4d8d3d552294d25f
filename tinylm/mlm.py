"""Masked-language-model pre-training: BERT's masking recipe, and batches that apply it.

BERT (Devlin et al., 2019) hides part of each sequence and trains the encoder
to restore it from both sides. Per sequence of T tokens, n = max(1, round(0.15 T))
positions are chosen at random; of those, 80% become ``[MASK]``, 10% a random
ordinary token and 10% keep their token (so the model cannot learn that only
``[MASK]`` positions matter). The loss is the cross-entropy at the chosen
positions only: every other target is -100, which ``cross_entropy`` ignores.

``MaskedBatches`` wraps the next-token ``BatchSampler`` so the one training
loop (tinylm/train.py) runs masked-LM unchanged: ``model(x, y)`` gets the
masked windows and their targets. Everything here is host data (NumPy).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tinylm.data import BatchSampler, generator_from_state
from tinylm.errors import CheckpointError, ConfigError

IGNORE_INDEX = -100  # cross_entropy's default ignore_index: no loss at this position

# A second random stream for the masks, independent of the sampler's window starts.
_MASK_STREAM = 0x4D4C4D  # "MLM"


@dataclass(frozen=True)
class MaskingRecipe:
    """Which positions to hide and how; the defaults are BERT's."""

    mask_id: int             # the [MASK] token
    n_ordinary: int          # random replacements are drawn from ids 0 .. n_ordinary - 1 (no specials)
    select: float = 0.15     # share of positions chosen for the loss
    to_mask: float = 0.8     # of the chosen: replaced by [MASK]
    to_random: float = 0.1   # of the chosen: replaced by a random token (the rest stay)

    @classmethod
    def for_tokenizer(cls, tokenizer) -> "MaskingRecipe":
        """BERT's recipe over a WithSpecialTokens tokenizer: its [MASK], its base's ordinary ids."""
        return cls(mask_id=tokenizer.special_id("[MASK]"), n_ordinary=tokenizer.base.vocab_size)

    def __post_init__(self):
        if not 0 < self.select <= 1:
            raise ConfigError(f"select must be in (0, 1], got {self.select}")
        if self.to_mask < 0 or self.to_random < 0 or self.to_mask + self.to_random > 1:
            raise ConfigError(f"to_mask ({self.to_mask}) and to_random ({self.to_random}) must be "
                              ">= 0 and add up to at most 1")
        if self.n_ordinary < 1 or not 0 <= self.mask_id:
            raise ConfigError(f"need n_ordinary >= 1 and mask_id >= 0, got {self.n_ordinary}, "
                              f"{self.mask_id}")


def mask_tokens(x: np.ndarray, recipe: MaskingRecipe, rng: np.random.Generator):
    """x (B, T) int -> (inputs (B, T), targets (B, T)); targets = x where chosen, -100 elsewhere."""
    B, T = x.shape
    n = max(1, round(recipe.select * T))
    rank = rng.random((B, T)).argsort(axis=1).argsort(axis=1)       # a random order of each row
    chosen = rank < n                                                # exactly n per row
    roll = rng.random((B, T))                                        # what becomes of a chosen one
    masked = chosen & (roll < recipe.to_mask)
    randomised = chosen & (roll >= recipe.to_mask) & (roll < recipe.to_mask + recipe.to_random)
    inputs = np.where(masked, recipe.mask_id, x)
    inputs = np.where(randomised, rng.integers(0, recipe.n_ordinary, size=(B, T)), inputs)
    targets = np.where(chosen, x, IGNORE_INDEX)
    return inputs.astype(np.int64), targets.astype(np.int64)


class MaskedBatches:
    """Random windows of ``ids`` with BERT's masking: ``next()`` -> (inputs, targets), (B, T) each.

    Same constructor as BatchSampler plus the recipe, so the training loop can
    make evaluation batches the same way (``functools.partial(MaskedBatches,
    recipe=...)``). ``state()`` holds both generators: a resumed run sees the
    same windows and the same masks.
    """

    def __init__(self, ids: np.ndarray, block_size: int, batch_size: int, seed: int,
                 recipe: MaskingRecipe):
        self.windows = BatchSampler(ids, block_size, batch_size, seed)
        self.recipe = recipe
        self._rng = np.random.Generator(np.random.PCG64([seed, _MASK_STREAM]))

    @property
    def ids(self) -> np.ndarray:
        return self.windows.ids

    @property
    def block_size(self) -> int:
        return self.windows.block_size

    @property
    def batch_size(self) -> int:
        return self.windows.batch_size

    def next(self) -> tuple[np.ndarray, np.ndarray]:
        x, _ = self.windows.next()  # the next-token targets are not this objective's
        return mask_tokens(x, self.recipe, self._rng)

    def state(self) -> dict:
        return {"windows": self.windows.state(), "masks": self._rng.bit_generator.state}

    def set_state(self, state: dict) -> None:
        try:
            windows, masks = state["windows"], state["masks"]
        except (KeyError, TypeError) as exc:
            raise CheckpointError(f"invalid masked-LM sampler state in checkpoint: {exc}") from None
        rng = generator_from_state(masks, "masked-LM sampler")
        self.windows.set_state(windows)
        self._rng = rng
