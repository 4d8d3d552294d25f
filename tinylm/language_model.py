"""The short way in from Python: load a trained GPT and generate; train one from a script.

    >>> import tinylm
    >>> lm = tinylm.load("out")              # a run directory (or GPT-2 weights in HF layout)
    >>> print(lm.generate("def ", 200))

    >>> lm = tinylm.fit("input.txt", out="runs/mine", preset="tiny", max_iters=500)

Both are thin layers over what the CLI runs (tinylm.checkpoint, tinylm.generate,
tinylm.config, tinylm.run), so a script and `tinylm train` / `tinylm sample` give
the same results for the same settings.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from tinylm import backends


@dataclass
class LanguageModel:
    """A trained model and its tokenizer, ready to generate text."""

    model: object      # a GPT (or another causal model of tinylm.models), in eval mode
    tokenizer: object  # CharTokenizer, BPETokenizer...: text <-> token ids
    path: Path | None = None

    def generate(self, prompt: str, num_tokens: int = 200, temperature: float = 0.8,
                 top_k: int | None = None, top_p: float | None = None, seed: int = 0,
                 stop: Sequence[str] = (), **sampling) -> str:
        """``prompt`` followed by up to ``num_tokens`` sampled tokens (KV-cached), as text.

        temperature 0 is greedy; ``stop`` strings end the text before them; more
        settings of tinylm.generate.Sampling (repetition_penalty, no_repeat_ngram_size)
        pass through ``sampling``. The same seed gives the same text.
        """
        from tinylm.generate import check_sampling, generate_text

        settings = check_sampling(temperature, top_k, top_p=top_p, **sampling)
        ids = self.tokenizer.encode(prompt)
        return prompt + generate_text(self.model, self.tokenizer, ids, num_tokens, settings, seed,
                                      stop=stop)


def load(path, backend: str | None = None) -> LanguageModel:
    """The model saved at ``path``: a run directory of `tinylm train` / `tinylm import-gpt2`
    (or its .safetensors file), or a GPT-2 directory in the HF layout (config.json,
    model.safetensors, vocab.json, merges.txt). ``backend`` ("numpy", "numba", "cupy")
    switches the active backend first."""
    from tinylm.checkpoint import checkpoint_path, load_model
    from tinylm.gpt2 import load_gpt2

    if backend is not None:
        backends.set_backend(backend)
    path = Path(path)
    if not checkpoint_path(path).exists() and (path / "config.json").exists():
        model, tokenizer = load_gpt2(path)
        return LanguageModel(model, tokenizer, path)
    model, tokenizer, ckpt = load_model(path)
    return LanguageModel(model, tokenizer, ckpt.path)


def fit(data: str | None = None, out="out", preset: str | None = None,
        on_event: Callable[[dict], None] | None = None, val_fraction: float = 0.1,
        **fields) -> LanguageModel:
    """Train a new GPT as `tinylm train` does, and return it ready to generate.

    ``data``: a text file or directory (None: the offline default corpus); ``out``:
    the run directory (checkpoint, metrics.jsonl, loss.png); ``preset`` and
    ``fields`` (n_layer=..., max_iters=..., nanoGPT's names) resolve as on the
    command line; ``on_event`` receives the loop's events (dicts with "event":
    "step" or "eval"). To continue a run, use tinylm.run.resume_run.
    """
    from tinylm.config import resolve_config
    from tinylm.run import new_run

    model_fields, train_config = resolve_config(preset, {}, fields)
    run = new_run(model_fields, train_config, data, val_fraction, out)
    state = run.execute(on_event=on_event or (lambda event: None))
    return LanguageModel(state.model.eval(), run.tokenizer, run.out)
