"""Sequence classification: a pre-trained backbone, a pooling step and one linear layer.

ids (B, T) -> backbone features h (B, T, C) -> pooled (B, C) -> class logits (B, K)

The backbone is an Encoder (tinylm/models/encoder.py, pre-trained as a masked
LM) or a GPT. Pooling turns one vector per position into one per text:

- ``cls``: the vector of the [CLS] token put in front of every text (BERT);
  encoder only, since under a causal mask position 0 sees nothing but itself;
- ``mean``: the average over the text's positions (padding left out);
- ``last``: the vector of the last token of the text, the one position of a
  causal GPT that has seen the whole text.

Batches are padded with ``PAD`` (-1, not a token) after each text. The
classifier turns them into the keep mask (the encoder's attention ignores
padding keys; a GPT, being causal, never looks ahead at them) and pools over
the kept positions only, so a text gets the same logits whatever it is batched with.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from tinylm import backends, ops
from tinylm.errors import ConfigError, ConfigRecord, require_choice
from tinylm.nn import Dropout, Linear, Module
from tinylm.tensor import Tensor

from .encoder import Encoder, EncoderConfig
from .gpt import GPT, GPTConfig
from .sizes import gpt_parameters

PAD = -1  # padding in classifier batches; never a token id


# h_cls = h[:, 0]   (the [CLS] token in front of every text)
def pool_cls(h: Tensor, keep) -> Tensor:
    return h[:, 0]                                                    # (B, C)


# h̄_b = Σ_t keep_bt h_bt / Σ_t keep_bt   (the mean over the text's own positions)
def pool_mean(h: Tensor, keep) -> Tensor:
    weights = keep / keep.sum(axis=1, keepdims=True)                  # (B, T), rows sum to 1
    return (h * weights.astype(h.dtype)[:, :, None]).sum(axis=1)      # (B, C)


# h_last_b = h[b, n_b - 1],  n_b = Σ_t keep_bt   (the last token of each text)
def pool_last(h: Tensor, keep) -> Tensor:
    last = keep.sum(axis=1) - 1                                       # (B,)
    return h[backends.current().xp.arange(h.shape[0]), last]          # (B, C)


POOLINGS = {"cls": pool_cls, "mean": pool_mean, "last": pool_last}
# backbone type -> (config class, model class)
BACKBONES = {"encoder": (EncoderConfig, Encoder), "gpt": (GPTConfig, GPT)}


@dataclass(frozen=True)
class ClassifierConfig(ConfigRecord):
    KIND = "classifier"
    backbone_type: str           # "encoder" or "gpt": a model type of tinylm.models.MODEL_TYPES
    backbone: dict               # that model's config (its to_dict())
    labels: tuple                # class names; class k is labels[k]
    pooling: str = "cls"         # cls | mean | last
    pad_id: int = 0              # token fed at padding positions ([PAD] for an encoder)

    def __post_init__(self):
        require_choice(self, "backbone_type", BACKBONES)
        require_choice(self, "pooling", POOLINGS)
        if self.pooling == "cls" and self.backbone_type == "gpt":
            raise ConfigError("pooling 'cls' needs an encoder: a GPT's first position sees only "
                              "itself; use --pooling last or --pooling mean")
        labels = self.labels
        if (not isinstance(labels, (tuple, list)) or len(labels) < 2
                or not all(isinstance(x, str) and x for x in labels) or len(set(labels)) != len(labels)):
            raise ConfigError(f"labels must be at least 2 distinct non-empty strings, got {labels!r:.100}")
        object.__setattr__(self, "labels", tuple(labels))
        self.backbone_config()  # validates the backbone's sizes
        if not isinstance(self.pad_id, int) or not 0 <= self.pad_id < self.vocab_size:
            raise ConfigError(f"pad_id must be a token id in [0, {self.vocab_size}), got {self.pad_id!r}")

    def backbone_classes(self):
        return BACKBONES[self.backbone_type]

    def backbone_config(self):
        config_cls, _ = self.backbone_classes()
        if not isinstance(self.backbone, dict):
            raise ConfigError(f"backbone must be a config dict, got {self.backbone!r:.80}")
        try:
            return config_cls.from_dict(self.backbone)
        except TypeError as exc:
            raise ConfigError(f"invalid {self.backbone_type} config: {exc}") from None

    def count_parameters(self) -> int:
        """The backbone's parameters plus the head's C K + K (checked against a checkpoint)."""
        c = self.backbone_config()
        head = c.n_embd * self.n_classes + self.n_classes
        return gpt_parameters(c) + head

    @property
    def block_size(self) -> int:
        return self.backbone["block_size"]

    @property
    def vocab_size(self) -> int:
        return self.backbone["vocab_size"]

    @property
    def n_classes(self) -> int:
        return len(self.labels)

    def to_dict(self) -> dict:
        return {**asdict(self), "labels": list(self.labels)}


class SequenceClassifier(Module):
    """Texts as ids (B, T), padded with PAD -> class logits (B, K)."""

    model_type = "classifier"

    def __init__(self, cfg: ClassifierConfig, seed: int = 0):
        self.config = cfg
        _, backbone_cls = cfg.backbone_classes()
        backbone_cfg = cfg.backbone_config()
        self.backbone = backbone_cls(backbone_cfg, seed)
        rng = np.random.default_rng([seed, 1])  # the head's own stream: the backbone's is unchanged
        self.drop = Dropout(backbone_cfg.dropout)
        self.head = Linear(backbone_cfg.n_embd, cfg.n_classes, rng)

    def features(self, ids) -> tuple[Tensor, object]:
        """ids (B, T) with PAD after each text -> (backbone features (B, T, C), keep (B, T))."""
        xp = backends.current().xp
        ids = xp.asarray(ids.data if isinstance(ids, Tensor) else ids)
        keep = ids != PAD
        filled = xp.where(keep, ids, self.config.pad_id)
        if self.config.backbone_type == "gpt":
            return self.backbone.features(filled), keep  # causal: padding after the text is unseen
        return self.backbone.features(filled, keep), keep

    def forward(self, ids, labels=None):
        """-> logits (B, K), and the mean cross-entropy when integer ``labels`` (B,) are given."""
        h, keep = self.features(ids)
        pooled = POOLINGS[self.config.pooling](h, keep)                # (B, C)
        logits = self.head(self.drop(pooled))                          # (B, K)
        loss = ops.cross_entropy(logits, labels) if labels is not None else None
        return logits, loss
