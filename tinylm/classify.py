"""Fine-tuning a pre-trained checkpoint for sequence classification, and using the result.

    finetune(ckpt, train_file, val_file, out, train_config)   # `tinylm finetune`
    load_classifier(out); predict(model, tokenizer, texts)      # `tinylm classify`

The pre-trained model (an Encoder from `tinylm train --objective mlm`, or a GPT)
becomes the backbone of a SequenceClassifier (tinylm/models/classifier.py);
the whole network is trained by the same loop as pre-training (tinylm/train.py)
on batches of labelled texts, then scored on the validation file: accuracy,
macro-F1 and per-class precision / recall / F1, beside the majority-class baseline.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from tinylm import backends
from tinylm.checkpoint import Checkpoint, build_model, load_checkpoint, save_checkpoint
from tinylm.errors import CheckpointError, ConfigError, DataError
from tinylm.labelled import BadRow, Example, describe_bad_rows, read_labelled
from tinylm.models.classifier import PAD, ClassifierConfig, SequenceClassifier
from tinylm.tensor import no_grad
from tinylm.tokenizers import tokenizer_from_dict
from tinylm.train import TrainConfig, new_state, train

# Fine-tuning is short: a few hundred steps, a smaller learning rate, light decay.
FINETUNE_DEFAULTS = dict(batch_size=16, max_iters=300, learning_rate=5e-4, min_lr=5e-5,
                         warmup_iters=20, weight_decay=0.01, eval_interval=100, eval_iters=5,
                         log_interval=10)


# -- texts -> padded id batches -----------------------------------------------------------
@dataclass
class EncodedSet:
    """Token ids of each text (with [CLS] in front where the pooling reads it) and label ids."""

    seqs: list[np.ndarray]
    labels: np.ndarray           # (N,) int64
    lines: list[int]             # line numbers in the source file
    truncated: int = 0           # texts cut to block_size

    def __len__(self) -> int:
        return len(self.seqs)


def encode_text(tokenizer, text: str, block_size: int, cls_id: int | None) -> tuple[np.ndarray, bool]:
    """(ids, truncated): the text's ids cut to block_size (one less with [CLS] in front)."""
    ids = tokenizer.encode(text)
    room = block_size - (cls_id is not None)
    cut = len(ids) > room
    ids = ids[:room]
    return (np.concatenate([[cls_id], ids]).astype(np.int64) if cls_id is not None else ids), cut


def encode_examples(examples: list[Example], tokenizer, label_ids: dict[str, int], block_size: int,
                    cls_id: int | None) -> tuple[EncodedSet, list[BadRow]]:
    """Encode every example; unknown labels and untokenizable text become BadRows."""
    seqs, labels, lines, bad, truncated = [], [], [], [], 0
    for ex in examples:
        if ex.label not in label_ids:
            bad.append(BadRow(ex.line, f"label {ex.label!r} does not occur in the training data"))
            continue
        try:
            ids, cut = encode_text(tokenizer, ex.text, block_size, cls_id)
        except DataError as exc:
            bad.append(BadRow(ex.line, str(exc)))
            continue
        seqs.append(ids)
        labels.append(label_ids[ex.label])
        lines.append(ex.line)
        truncated += cut
    return EncodedSet(seqs, np.asarray(labels, dtype=np.int64), lines, truncated), bad


def pad_batch(seqs: list[np.ndarray]) -> np.ndarray:
    """Sequences of different lengths -> (B, longest) int64, PAD after each one."""
    out = np.full((len(seqs), max(len(s) for s in seqs)), PAD, dtype=np.int64)
    for row, s in zip(out, seqs):
        row[:len(s)] = s
    return out


class LabelledBatches:
    """Random batches of labelled texts: ``next()`` -> (ids (B, T) padded with PAD, labels (B,)).

    The constructor matches BatchSampler's, so the training loop also makes its
    evaluation batches with it; ``ids`` is the data set it draws from.
    """

    def __init__(self, data: EncodedSet, block_size: int, batch_size: int, seed: int):
        self.ids, self.block_size, self.batch_size = data, block_size, batch_size
        self._rng = np.random.Generator(np.random.PCG64(seed))

    def next(self) -> tuple[np.ndarray, np.ndarray]:
        rows = self._rng.integers(0, len(self.ids), size=self.batch_size)  # with replacement
        return pad_batch([self.ids.seqs[i] for i in rows]), self.ids.labels[rows]

    def state(self) -> dict:
        return {"bit_generator": self._rng.bit_generator.state}

    def set_state(self, state: dict) -> None:
        try:
            self._rng.bit_generator.state = state["bit_generator"]
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"invalid labelled-batch sampler state: {exc}") from None


# -- scores --------------------------------------------------------------------------------
def classification_report(y_true: np.ndarray, y_pred: np.ndarray, labels: tuple) -> dict:
    """Accuracy, macro-F1 and per-class precision / recall / F1 / support.

    precision_k = TP_k / predicted_k, recall_k = TP_k / actual_k, F1 = 2PR / (P + R)
    (0 where undefined); macro-F1 averages F1 over the classes that occur in
    y_true or y_pred (as scikit-learn does).
    """
    K = len(labels)
    confusion = np.bincount(y_true * K + y_pred, minlength=K * K).reshape(K, K)  # [true, predicted]
    tp, predicted, actual = np.diag(confusion), confusion.sum(axis=0), confusion.sum(axis=1)
    precision = np.divide(tp, predicted, out=np.zeros(K), where=predicted > 0)
    recall = np.divide(tp, actual, out=np.zeros(K), where=actual > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros(K),
                   where=precision + recall > 0)
    present = (predicted + actual) > 0
    return {
        "accuracy": float(tp.sum() / len(y_true)),
        "macro_f1": float(f1[present].mean()),
        "examples": int(len(y_true)),
        "classes": [{"label": labels[k], "precision": float(precision[k]), "recall": float(recall[k]),
                     "f1": float(f1[k]), "support": int(actual[k])} for k in range(K)],
        "confusion": confusion.tolist(),
    }


def format_report(report: dict) -> str:
    """The per-class table and the summary line, for a terminal."""
    width = max(9, *(len(c["label"]) for c in report["classes"]))
    rows = [f"{'label':<{width}}  precision  recall      f1  support"]
    rows += [f"{c['label']:<{width}}  {c['precision']:9.3f}  {c['recall']:6.3f}  {c['f1']:6.3f}"
             f"  {c['support']:7d}" for c in report["classes"]]
    base = report.get("majority_baseline")
    vs = f" (majority baseline {base['accuracy']:.3f}: always {base['label']!r})" if base else ""
    rows.append(f"accuracy {report['accuracy']:.3f}{vs} | macro-F1 {report['macro_f1']:.3f} | "
                f"{report['examples']} examples")
    return "\n".join(rows)


@no_grad()
def predict_proba(model: SequenceClassifier, seqs: list[np.ndarray], batch_size: int = 64) -> np.ndarray:
    """Class probabilities (N, K) of each encoded text, in order."""
    model.eval()
    to_host, out = backends.current().to_host, []
    for i in range(0, len(seqs), batch_size):
        logits, _ = model(pad_batch(seqs[i:i + batch_size]))
        z = np.asarray(to_host(logits.data), dtype=np.float64)
        p = np.exp(z - z.max(axis=1, keepdims=True))
        out.append(p / p.sum(axis=1, keepdims=True))
    return np.concatenate(out)


def evaluate(model: SequenceClassifier, data: EncodedSet, majority: int | None = None) -> dict:
    """classification_report of the model on ``data``, with the majority-class baseline."""
    predicted = predict_proba(model, data.seqs).argmax(axis=1)
    report = classification_report(data.labels, predicted, model.config.labels)
    if majority is not None:
        report["majority_baseline"] = {"label": model.config.labels[majority],
                                       "accuracy": float(np.mean(data.labels == majority))}
    return report


# -- fine-tuning ---------------------------------------------------------------------------
def cls_id_for(tokenizer, pooling: str) -> int | None:
    """The [CLS] id to put in front of each text when the pooling reads it, else None."""
    return tokenizer.special_id("[CLS]") if pooling == "cls" else None


def pad_id_for(tokenizer) -> int:
    """[PAD] where the tokenizer has one (an encoder's); else 0, which a causal GPT never sees."""
    return tokenizer.special_id("[PAD]") if "[PAD]" in getattr(tokenizer, "names", ()) else 0


@dataclass
class FinetuneResult:
    model: SequenceClassifier
    report: dict                 # classification_report on the validation file
    history: list                # [(step, train_loss, val_loss)]
    path: Path                   # the classifier checkpoint


def finetune(ckpt, train_path, val_path, out, train_config: TrainConfig, pooling: str | None = None,
             strict: bool = False, on_event: Callable[[dict], None] = lambda e: None,
             warn: Callable[[str], None] = lambda message: None,
             stop_requested: Callable[[], bool] = lambda: False) -> FinetuneResult:
    """Fine-tune the model saved in ``ckpt`` on labelled texts; the classifier is saved in ``out``.

    ``pooling`` defaults to "cls" for an encoder and "last" for a GPT. Bad rows
    are passed to ``warn`` with their line numbers (with ``strict``, they are a
    DataError); so is the number of texts cut to block_size.
    """
    source = load_checkpoint(ckpt)
    if source.model_type not in ("encoder", "gpt"):
        raise CheckpointError(f"{source.path} holds a model of type {source.model_type!r}; fine-tune a "
                              "pre-trained encoder (tinylm train --objective mlm) or GPT")
    tokenizer = tokenizer_from_dict(source.tokenizer)
    pooling = pooling or ("cls" if source.model_type == "encoder" else "last")
    train_examples = _read(train_path, strict, warn)
    labels = tuple(sorted({ex.label for ex in train_examples}))
    config = ClassifierConfig(source.model_type, source.model_config, labels, pooling,
                              pad_id_for(tokenizer))
    if pooling == "cls" and "[CLS]" not in getattr(tokenizer, "names", ()):
        raise ConfigError(f"{source.path}: its tokenizer has no [CLS] token; use --pooling mean")
    label_ids = {label: k for k, label in enumerate(labels)}
    cls_id = cls_id_for(tokenizer, pooling)
    data = {}
    for name, path, examples in (("train", train_path, train_examples),
                                 ("val", val_path, _read(val_path, strict, warn))):
        data[name], bad = encode_examples(examples, tokenizer, label_ids, config.block_size, cls_id)
        _report_bad(path, bad, strict, warn)
        if not len(data[name]):
            raise DataError(f"{path}: no usable rows left ({describe_bad_rows(path, bad)})")
        if data[name].truncated:
            warn(f"{path}: {data[name].truncated} text(s) longer than block_size "
                 f"{config.block_size} tokens were truncated to their beginning")

    model = SequenceClassifier(config, seed=train_config.seed)
    model.backbone.load_state_dict(source.weights)
    state = new_state(model, data["train"], train_config, batches=LabelledBatches)
    record = {"from": str(source.path), "train_file": str(train_path), "val_file": str(val_path),
              "config": train_config.to_dict()}

    def save(st, report: dict | None = None) -> Path:
        finetuned = {**record, "step": st.step, "history": st.history, "report": report}
        return save_checkpoint(out, Checkpoint(
            model_type=model.model_type, model_config=config.to_dict(), tokenizer=source.tokenizer,
            weights=model.state_dict(), train={"objective": "classify", "finetune": finetuned},
            info={"seed": train_config.seed}))

    train(state, data["val"], train_config, on_event=on_event, save=save,
          stop_requested=stop_requested)
    majority = int(np.bincount(data["train"].labels, minlength=len(labels)).argmax())
    report = evaluate(model, data["val"], majority)
    return FinetuneResult(model, report, state.history, save(state, report))


def _read(path, strict: bool, warn) -> list[Example]:
    examples, bad = read_labelled(path)
    _report_bad(path, bad, strict, warn)
    return examples


def _report_bad(path, bad: list[BadRow], strict: bool, warn) -> None:
    if bad and strict:
        raise DataError(describe_bad_rows(path, bad) + "; fix them, or drop --strict to leave them out")
    if bad:
        warn(describe_bad_rows(path, bad) + "; left out (--strict refuses them)")


# -- using a classifier --------------------------------------------------------------------
def load_classifier(location) -> tuple[SequenceClassifier, object, Checkpoint]:
    """(classifier, tokenizer, checkpoint) saved by ``finetune``."""
    ckpt = load_checkpoint(location)
    if ckpt.model_type != "classifier":
        raise CheckpointError(f"{ckpt.path} holds a model of type {ckpt.model_type!r}, not a classifier; "
                              f"make one with: tinylm finetune --ckpt {ckpt.path.parent} "
                              "--train FILE --val FILE")
    return build_model(ckpt).eval(), tokenizer_from_dict(ckpt.tokenizer), ckpt


def predict(model: SequenceClassifier, tokenizer, texts: list[str]) -> tuple[list[dict], int]:
    """([{text, label, probabilities: {label: p}}], number of texts truncated) for raw texts."""
    cfg = model.config
    empty = [i + 1 for i, t in enumerate(texts) if not t.strip()]
    if empty:
        raise DataError(f"text {empty[0]} of {len(texts)} is empty; give each text some characters")
    cls_id = cls_id_for(tokenizer, cfg.pooling)
    encoded = [encode_text(tokenizer, t, cfg.block_size, cls_id) for t in texts]
    probs = predict_proba(model, [ids for ids, _ in encoded])
    results = [{"text": t, "label": cfg.labels[int(p.argmax())],
                "probabilities": {label: float(q) for label, q in zip(cfg.labels, p)}}
               for t, p in zip(texts, probs)]
    return results, sum(cut for _, cut in encoded)
