"""GPT-2's published checkpoints <-> tinylm: HF ``model.safetensors`` + ``config.json``, and
GPT-2's tokenizer files ``vocab.json`` + ``merges.txt``.

tinylm's GPT is GPT-2's architecture with GPT-2's conventions: Linear weights
stored (in, out) like HF's Conv1D, tanh GELU, LayerNorm eps 1e-5, learned
positions, the output matrix tied to the token embedding. So converting is
renaming, tensor for tensor, no transposes:

    transformer.wte.weight            <->  wte.weight
    transformer.wpe.weight            <->  wpe.weight
    transformer.h.{i}.<rest>          <->  blocks.{i}.<rest>   (ln_1, attn.c_attn, attn.c_proj, ln_2,
                                                              mlp.c_fc, mlp.c_proj; .weight, .bias)
    transformer.ln_f.{weight,bias}    <->  ln_f.{weight,bias}

HF's causal-mask buffers (``h.{i}.attn.bias``, ``attn.masked_bias``) are not
weights and are skipped; a stored ``lm_head.weight`` must equal wte (tied).
Reading needs no torch (tinylm/safetensors.py) and never a pickle: a directory
with only ``pytorch_model.bin`` is refused with how to convert it.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np

from tinylm import backends, jsonsafe
from tinylm.bpe import BPETokenizer, str_to_token, token_to_str, utf8
from tinylm.errors import CheckpointError, ConfigError, DataError
from tinylm.fileio import atomic_write_bytes, read_bounded
from tinylm.jsonsafe import is_int, kind_of
from tinylm.models import GPT, GPTConfig
from tinylm.resources import check_inference, count_parameters
from tinylm.safetensors import Header, load_file, read_header, save_file
from tinylm.tensor import get_default_dtype

TANH_GELUS = ("gelu_new", "gelu_pytorch_tanh", "gelu_fast")  # HF's names for GPT-2's GELU
_BLOCK_LAYERS = ("ln_1", "attn.c_attn", "attn.c_proj", "ln_2", "mlp.c_fc", "mlp.c_proj")
_HF_BLOCK = re.compile(r"^(?:transformer\.)?h\.(\d+)\."
                       rf"((?:{'|'.join(map(re.escape, _BLOCK_LAYERS))})\.(?:weight|bias))$")
_HF_TOP = re.compile(r"^(?:transformer\.)?(wte|wpe|ln_f)\.(weight|bias)$")
MAX_JSON_BYTES = 64 * 2**20  # config.json, vocab.json (GPT-2's: 1 MB), index files
_SKIPPED = re.compile(r"^(?:transformer\.)?h\.\d+\.attn\.(?:bias|masked_bias)$|^lm_head\.weight$")


# ---------------------------------------------------------------------------- names
def hf_name(name: str) -> str:
    """tinylm parameter name -> HF GPT2LMHeadModel name."""
    block = re.match(r"^blocks\.(\d+)\.(.+)$", name)
    return f"transformer.h.{block[1]}.{block[2]}" if block else f"transformer.{name}"


def tinylm_name(name: str) -> str | None:
    """HF name -> tinylm name; None for buffers that are not weights. GPT2Model files lack 'transformer.'."""
    if _SKIPPED.match(name):
        return None
    block = _HF_BLOCK.match(name)
    if block:
        return f"blocks.{block[1]}.{block[2]}"
    top = _HF_TOP.match(name)
    if top:
        return f"{top[1]}.{top[2]}"
    raise CheckpointError(f"unexpected tensor {name!r} in a GPT-2 checkpoint")


# ---------------------------------------------------------------------------- config
def gpt_config(hf: dict) -> GPTConfig:
    """tinylm's GPTConfig for an HF GPT-2 ``config.json``; refuses what tinylm's GPT cannot compute."""
    if not isinstance(hf, dict):
        raise CheckpointError(f"config.json must be a JSON object, got {kind_of(hf)}")
    for name in ("vocab_size", "n_positions", "n_ctx", "n_layer", "n_head", "n_embd", "n_inner"):
        if hf.get(name) is not None and not is_int(hf[name]):
            raise CheckpointError(f"config.json: {name} must be an integer, got {hf[name]!r:.40}")

    def field(name, default=None):
        return hf.get(name, default)

    refusals = [
        (field("model_type", "gpt2") != "gpt2", f"model_type {field('model_type')!r} (need 'gpt2')"),
        (field("activation_function", "gelu_new") not in TANH_GELUS,
         f"activation_function {field('activation_function')!r} (tinylm's GELU is the tanh form: {TANH_GELUS})"),
        (field("layer_norm_epsilon", 1e-5) != 1e-5, f"layer_norm_epsilon {field('layer_norm_epsilon')} (need 1e-5)"),
        (field("n_inner") not in (None, 4 * (field("n_embd") or 0)), f"n_inner {field('n_inner')} (need 4 * n_embd)"),
        (not field("scale_attn_weights", True), "scale_attn_weights false"),
        (field("scale_attn_by_inverse_layer_idx", False), "scale_attn_by_inverse_layer_idx true"),
        (field("add_cross_attention", False), "add_cross_attention true"),
        (not field("tie_word_embeddings", True), "tie_word_embeddings false (tinylm ties lm_head to wte)"),
    ]
    problems = [why for bad, why in refusals if bad]
    if problems:
        raise CheckpointError("this GPT-2 variant does not fit tinylm's GPT: " + "; ".join(problems))
    try:
        return GPTConfig(vocab_size=hf["vocab_size"], block_size=hf.get("n_positions", hf.get("n_ctx")),
                         n_layer=hf["n_layer"], n_head=hf["n_head"], n_embd=hf["n_embd"],
                         dropout=0.0, bias=True)
    except KeyError as exc:
        raise CheckpointError(f"config.json lacks {exc.args[0]!r}") from None
    except ConfigError as exc:
        raise CheckpointError(f"config.json: {exc}") from None


def hf_config(cfg: GPTConfig, tokenizer) -> dict:
    """An HF ``config.json`` for GPT2LMHeadModel with tinylm's model config."""
    eot = getattr(tokenizer, "special_tokens", {}).get("<|endoftext|>")
    return {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2",
            "vocab_size": cfg.vocab_size, "n_positions": cfg.block_size, "n_ctx": cfg.block_size,
            "n_embd": cfg.n_embd, "n_layer": cfg.n_layer, "n_head": cfg.n_head, "n_inner": None,
            "activation_function": "gelu_new", "layer_norm_epsilon": 1e-5,
            "resid_pdrop": cfg.dropout, "embd_pdrop": cfg.dropout, "attn_pdrop": cfg.dropout,
            "initializer_range": 0.02, "tie_word_embeddings": True,
            "bos_token_id": eot, "eos_token_id": eot, "torch_dtype": "float32"}


# ---------------------------------------------------------------------------- tokenizer files
def load_gpt2_tokenizer(directory, special_tokens=("<|endoftext|>",)) -> BPETokenizer:
    """GPT-2's ``vocab.json`` ({printable token: id}) and ``merges.txt`` ("Ġ t" per line), with GPT-2's ids.

    Those of ``special_tokens`` present in the vocabulary become special tokens.
    """
    vocab_path, merges_path = Path(directory) / "vocab.json", Path(directory) / "merges.txt"
    vocab = read_json(vocab_path, DataError)
    try:
        lines = read_bounded(merges_path, MAX_JSON_BYTES, "merges file", DataError).decode("utf-8") \
            .splitlines()
    except UnicodeDecodeError as exc:
        raise DataError(f"{merges_path} is not valid UTF-8 (byte {exc.start})") from None
    if not isinstance(vocab, dict) or not all(is_int(i) for i in vocab.values()) \
            or sorted(vocab.values()) != list(range(len(vocab))):
        raise DataError(f"{vocab_path}: expected a JSON object mapping tokens to the integer ids 0..n-1")
    specials = {s: vocab[s] for s in special_tokens if s in vocab}
    tokens: list[bytes] = [b""] * len(vocab)
    for text, i in vocab.items():
        try:
            tokens[i] = utf8(text) if text in specials else str_to_token(text)
        except KeyError:
            raise DataError(f"{vocab_path}: token {text!r} is not in GPT-2's byte alphabet; "
                            "if it is an added special token, pass it in special_tokens") from None
    merges = []
    for n, line in enumerate(lines, start=1):
        if not line.strip() or (n == 1 and line.startswith("#version")):
            continue
        parts = line.split(" ")
        if len(parts) != 2 or parts[0] not in vocab or parts[1] not in vocab:
            raise DataError(f"{merges_path}:{n}: expected two known tokens separated by a space, got {line!r}")
        merges.append((vocab[parts[0]], vocab[parts[1]]))
    try:
        return BPETokenizer(tokens, merges, specials)
    except ConfigError as exc:
        raise DataError(f"GPT-2 tokenizer files in {directory}: {exc}") from None


def save_gpt2_tokenizer(tokenizer: BPETokenizer, directory) -> list[Path]:
    """Write ``vocab.json`` and ``merges.txt`` in GPT-2's format (atomically)."""
    names = {i: s for s, i in tokenizer.special_tokens.items()}
    vocab = {}
    for i, t in enumerate(tokenizer.tokens):
        text = names.get(i) or token_to_str(t)
        if text in vocab:
            raise ConfigError(f"special token {text!r} is spelt like an ordinary token; "
                              "GPT-2's vocab.json cannot hold both")
        vocab[text] = i
    merges = ["#version: 0.2"] + [f"{token_to_str(tokenizer.tokens[a])} {token_to_str(tokenizer.tokens[b])}"
                                  for a, b in tokenizer.merges]
    paths = [Path(directory) / "vocab.json", Path(directory) / "merges.txt"]
    atomic_write_bytes(paths[0], json.dumps(vocab, ensure_ascii=False).encode("utf-8"))
    atomic_write_bytes(paths[1], ("\n".join(merges) + "\n").encode("utf-8"))
    return paths


# ---------------------------------------------------------------------------- weights
def read_json(path: Path, error: type[Exception] = CheckpointError):
    """A JSON file of a GPT-2 directory: a regular file of at most MAX_JSON_BYTES, safely parsed."""
    return jsonsafe.parse(read_bounded(path, MAX_JSON_BYTES, "file", error), str(path), error)


def _weight_files(directory: Path) -> list[Path]:
    """model.safetensors, or the shards listed in model.safetensors.index.json (in the directory)."""
    single, index = directory / "model.safetensors", directory / "model.safetensors.index.json"
    if single.exists():
        return [single]
    if index.exists():
        weight_map = jsonsafe.field(read_json(index), "weight_map", dict, str(index), CheckpointError)
        for shard in weight_map.values():
            if not isinstance(shard, str) or Path(shard).name != shard or shard in ("", ".", ".."):
                raise CheckpointError(f"{index}: shard {shard!r:.60} is not a file name in {directory}")
        return [directory / shard for shard in sorted(set(weight_map.values()))]
    if (directory / "pytorch_model.bin").exists():
        raise CheckpointError(f"{directory} holds pytorch_model.bin, a pickle, which tinylm never loads; "
                              "convert it once: GPT2LMHeadModel.from_pretrained(DIR)"
                              ".save_pretrained(DIR, safe_serialization=True)")
    raise CheckpointError(f"no model.safetensors in {directory}")


def _check_size(cfg: GPTConfig, headers: list[Header], directory: Path) -> None:
    """The config's parameter count against the weights' headers, and against memory, before
    anything is built: config.json alone could ask for any amount (n_layer = 10**12)."""
    shapes = {tinylm_name(name): shape for header in headers
              for name, (_, shape, _) in header.entries.items() if tinylm_name(name) is not None}
    held = sum(math.prod(shape) for shape in shapes.values())
    expected = count_parameters(cfg.vocab_size, cfg.block_size, cfg.n_layer, cfg.n_embd, True)
    if held != expected:
        missing = [] if cfg.n_layer > len(shapes) else \
            [n for n in _parameter_names(cfg.n_layer) if n not in shapes][:3]  # bounded by the file
        lacks = f" (missing: {', '.join(missing)})" if missing else ""
        raise CheckpointError(f"{directory}: config.json describes {expected:,} parameters but the "
                              f"weights hold {held:,}{lacks}; config and weights do not belong together")
    check_inference(cfg, 1, backends.current(), np.dtype(get_default_dtype()).itemsize)


def _parameter_names(n_layer: int) -> list[str]:
    """tinylm's names of a GPT-2's parameters (biases included)."""
    top = ["wte.weight", "wpe.weight", "ln_f.weight", "ln_f.bias"]
    return top + [f"blocks.{i}.{layer}.{kind}" for i in range(n_layer) for layer in _BLOCK_LAYERS
                  for kind in ("weight", "bias")]


def load_gpt2(directory) -> tuple[GPT, BPETokenizer]:
    """tinylm's GPT with the weights of the GPT-2 checkpoint in ``directory``, and its tokenizer."""
    directory = Path(directory)
    if not (directory / "config.json").exists():
        raise CheckpointError(f"no config.json in {directory}; expected an HF GPT-2 directory "
                              "(config.json, model.safetensors, vocab.json, merges.txt)")
    cfg = gpt_config(read_json(directory / "config.json"))
    if not (directory / "vocab.json").exists() or not (directory / "merges.txt").exists():
        raise CheckpointError(f"{directory} lacks vocab.json / merges.txt: GPT-2's tokenizer is "
                              "needed so that token ids mean what the weights learned")
    tokenizer = load_gpt2_tokenizer(directory)
    if tokenizer.vocab_size > cfg.vocab_size:
        raise CheckpointError(f"the tokenizer has {tokenizer.vocab_size} tokens but the model "
                              f"only {cfg.vocab_size}")
    files = _weight_files(directory)
    _check_size(cfg, [read_header(f) for f in files], directory)
    weights, lm_head = {}, None
    for name, array in ((k, v) for f in files for k, v in load_file(f)[0].items()):
        if name == "lm_head.weight":
            lm_head = array
        elif (ours := tinylm_name(name)) is not None:
            weights[ours] = array.astype(get_default_dtype(), copy=False)
    if lm_head is not None and not np.array_equal(lm_head, weights.get("wte.weight")):
        raise CheckpointError("lm_head.weight differs from wte.weight; tinylm ties them")
    model = GPT(cfg)
    model.load_state_dict(weights)
    return model.eval(), tokenizer


def export_gpt2(model: GPT, tokenizer, directory) -> list[Path]:
    """Write ``model`` as an HF GPT-2 directory: model.safetensors (float32), config.json, and
    vocab.json + merges.txt when the tokenizer is byte-level BPE. Returns the files written.

    A model without biases (bias=False) is written with zero biases, which computes the same.
    """
    if not isinstance(model, GPT):
        raise CheckpointError(f"only a GPT can be written as GPT-2, not {type(model).__name__}")
    cfg = model.config
    if (cfg.norm, cfg.pos_encoding) != ("layernorm", "learned"):
        raise CheckpointError(f"GPT-2 has LayerNorm and learned positions; this model has norm "
                              f"{cfg.norm!r} and pos_encoding {cfg.pos_encoding!r}, which GPT-2 "
                              "cannot express")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = model.state_dict()
    for name, p in model.named_parameters():  # Linear layers without bias: GPT-2 has one
        if name.endswith(".weight") and name.rsplit(".", 2)[-2] in ("c_attn", "c_proj", "c_fc"):
            state.setdefault(name[:-len("weight")] + "bias", np.zeros(p.shape[1]))
    tensors = {hf_name(k): np.ascontiguousarray(v, dtype=np.float32) for k, v in state.items()}
    written = [directory / "model.safetensors", directory / "config.json"]
    save_file(tensors, written[0], metadata={"format": "pt"})
    atomic_write_bytes(written[1], json.dumps(hf_config(model.config, tokenizer), indent=2).encode())
    if isinstance(tokenizer, BPETokenizer):
        written += save_gpt2_tokenizer(tokenizer, directory)
    return written


def import_gpt2(directory, out) -> Path:
    """Save the GPT-2 checkpoint in ``directory`` as a tinylm run directory ``out`` (weights and tokenizer)."""
    from tinylm.checkpoint import Checkpoint, save_checkpoint

    model, tokenizer = load_gpt2(directory)
    return save_checkpoint(out, Checkpoint(
        model_type=model.model_type, model_config=model.config.to_dict(),
        tokenizer=tokenizer.to_dict(), weights=model.state_dict(),
        info={"imported_from": str(Path(directory).resolve())}))
