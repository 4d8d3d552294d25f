"""GPT-2 checkpoints: names, config checks, import/export round trip, and parity with transformers."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from tinylm.bpe import train_bpe
from tinylm.checkpoint import Checkpoint, load_model, save_checkpoint
from tinylm.cli import cli
from tinylm.errors import CheckpointError
from tinylm.generate import generate
from tinylm.gpt2 import export_gpt2, gpt_config, hf_name, load_gpt2, tinylm_name
from tinylm.models import GPT, GPTConfig
from tinylm.safetensors import load_file, save_file
from tinylm.tensor import no_grad

TEXT = "def sample(model, ids):\n    return model(ids)  # the logits of 12 tokens\n" * 30


@pytest.fixture(scope="module")
def tok():
    return train_bpe(TEXT, 300)


def tiny_gpt(vocab_size, seed=0, **config):
    cfg = GPTConfig(**{**dict(vocab_size=vocab_size, block_size=16, n_layer=2, n_head=2, n_embd=32),
                       **config})
    return GPT(cfg, seed=seed).eval()


def logits_of(model, idx):
    with no_grad():
        return model(idx)[0].numpy()


IDX = np.random.default_rng(0).integers(0, 300, (2, 16))


# -- names and config ------------------------------------------------------------------------
def test_names_map_both_ways():
    model = tiny_gpt(300)
    for name, _ in model.named_parameters():
        assert tinylm_name(hf_name(name)) == name
    assert hf_name("blocks.1.attn.c_attn.weight") == "transformer.h.1.attn.c_attn.weight"
    assert tinylm_name("h.0.mlp.c_fc.bias") == "blocks.0.mlp.c_fc.bias"     # GPT2Model: no prefix
    assert tinylm_name("transformer.h.3.attn.masked_bias") is None          # a mask buffer
    with pytest.raises(CheckpointError, match="unexpected tensor"):
        tinylm_name("transformer.h.0.crossattention.q_attn.weight")


BASE = dict(vocab_size=300, n_positions=16, n_layer=2, n_head=2, n_embd=32)


@pytest.mark.parametrize("change, message", [
    (dict(activation_function="relu"), "activation_function"),
    (dict(layer_norm_epsilon=1e-6), "layer_norm_epsilon"),
    (dict(n_inner=100), "n_inner"),
    (dict(tie_word_embeddings=False), "tie_word_embeddings"),
    (dict(scale_attn_by_inverse_layer_idx=True), "inverse_layer_idx"),
    (dict(model_type="llama"), "model_type"),
    (dict(n_embd=33), "divisible"),
])
def test_config_refuses_what_tinylm_cannot_compute(change, message):
    with pytest.raises(CheckpointError, match=message):
        gpt_config({**BASE, **change})


def test_config_accepts_gpt2_as_published():
    cfg = gpt_config({**BASE, "activation_function": "gelu_new", "n_inner": None, "n_ctx": 16})
    assert (cfg.block_size, cfg.n_layer, cfg.vocab_size, cfg.dropout) == (16, 2, 300, 0.0)


# -- without transformers: export, then import ---------------------------------------------------
def test_export_then_import_is_exact(tok, tmp_path):
    model = tiny_gpt(tok.vocab_size, seed=1)
    files = export_gpt2(model, tok, tmp_path)
    assert sorted(f.name for f in files) == ["config.json", "merges.txt", "model.safetensors", "vocab.json"]
    again, tok_again = load_gpt2(tmp_path)
    assert tok_again == tok
    for (name, p), (_, q) in zip(model.named_parameters(), again.named_parameters()):
        np.testing.assert_array_equal(p.numpy(), q.numpy(), err_msg=name)
    tensors, metadata = load_file(tmp_path / "model.safetensors")
    assert metadata == {"format": "pt"} and "transformer.h.1.mlp.c_proj.weight" in tensors


def test_a_model_without_biases_is_written_with_zero_biases(tok, tmp_path):
    model = tiny_gpt(tok.vocab_size, bias=False)
    export_gpt2(model, tok, tmp_path)
    again, _ = load_gpt2(tmp_path)
    np.testing.assert_allclose(logits_of(again, IDX), logits_of(model, IDX), atol=1e-6)


def write_variant(tok, directory, edit_tensors=lambda t: t, edit_config=lambda c: c, drop=()):
    export_gpt2(tiny_gpt(tok.vocab_size), tok, directory)
    tensors, _ = load_file(directory / "model.safetensors")
    save_file(edit_tensors(tensors), directory / "model.safetensors")
    config = json.loads((directory / "config.json").read_text())
    (directory / "config.json").write_text(json.dumps(edit_config(config)))
    for name in drop:
        (directory / name).unlink()


def test_gpt2model_names_buffers_and_a_tied_lm_head_load(tok, tmp_path):
    def as_stored_by_old_transformers(t):
        t = {k.removeprefix("transformer."): v for k, v in t.items()}
        t["h.0.attn.bias"] = np.tril(np.ones((1, 1, 16, 16), dtype=np.float32))
        t["lm_head.weight"] = t["wte.weight"]
        return t
    write_variant(tok, tmp_path, as_stored_by_old_transformers)
    model, _ = load_gpt2(tmp_path)
    np.testing.assert_allclose(logits_of(model, IDX), logits_of(tiny_gpt(tok.vocab_size), IDX), atol=1e-6)


@pytest.mark.parametrize("variant, message", [
    (dict(edit_tensors=lambda t: {**t, "lm_head.weight": t["transformer.wte.weight"] + 1}), "lm_head"),
    (dict(edit_tensors=lambda t: {k: v for k, v in t.items() if "ln_f.bias" not in k}), "missing"),
    (dict(drop=["merges.txt"]), "merges.txt"),
    (dict(drop=["config.json"]), "config.json"),
    (dict(edit_config=lambda c: {**c, "vocab_size": 100}), "tokenizer has 300"),
])
def test_broken_directories_are_refused(tok, tmp_path, variant, message):
    write_variant(tok, tmp_path, **variant)
    with pytest.raises(CheckpointError, match=message):
        load_gpt2(tmp_path)


def test_a_pickle_is_never_loaded(tok, tmp_path):
    write_variant(tok, tmp_path, drop=["model.safetensors"])
    (tmp_path / "pytorch_model.bin").write_bytes(b"\x80\x04 not opened")
    with pytest.raises(CheckpointError, match="pickle"):
        load_gpt2(tmp_path)


def test_cli_import_sample_export(tok, tmp_path):
    export_gpt2(tiny_gpt(tok.vocab_size, seed=2), tok, tmp_path / "hf")
    runner = CliRunner()
    result = runner.invoke(cli, ["import-gpt2", str(tmp_path / "hf"), "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    again = runner.invoke(cli, ["import-gpt2", str(tmp_path / "hf"), "--out", str(tmp_path / "run")])
    assert again.exit_code == 2 and "--overwrite" in again.stderr
    sample = runner.invoke(cli, ["sample", "--ckpt", str(tmp_path / "run"), "--prompt", "def",
                                 "--num-tokens", "5", "--temperature", "0"])
    assert sample.exit_code == 0 and sample.stdout.startswith("def")
    result = runner.invoke(cli, ["export-gpt2", "--ckpt", str(tmp_path / "run"), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    a, _ = load_gpt2(tmp_path / "hf")
    b, _ = load_gpt2(tmp_path / "out")
    np.testing.assert_array_equal(logits_of(a, IDX), logits_of(b, IDX))


def test_cli_export_of_a_character_model_says_what_is_missing(tmp_path):
    from tinylm.tokenizers import CharTokenizer
    tok = CharTokenizer("abc")
    model = tiny_gpt(3)
    save_checkpoint(tmp_path / "run", Checkpoint("gpt", model.config.to_dict(), tok.to_dict(), model.state_dict()))
    result = CliRunner().invoke(cli, ["export-gpt2", "--ckpt", str(tmp_path / "run"), "--out", str(tmp_path / "o")])
    assert result.exit_code == 0 and "no vocab.json" in result.stderr
    assert load_model(tmp_path / "run")[0].config.vocab_size == 3


# -- with transformers: the oracle -----------------------------------------------------------------
@pytest.fixture(scope="module")
def hf_gpt2(tok, tmp_path_factory):
    """A random GPT-2 made and saved by transformers (safetensors), with our tokenizer files beside it."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from tinylm.gpt2 import save_gpt2_tokenizer
    torch.manual_seed(0)
    config = transformers.GPT2Config(n_layer=2, n_head=2, n_embd=64, vocab_size=tok.vocab_size,
                                     n_positions=32, initializer_range=0.2,  # varied greedy tokens
                                     bos_token_id=tok.vocab_size - 1, eos_token_id=tok.vocab_size - 1)
    model = transformers.GPT2LMHeadModel(config).eval()
    directory = tmp_path_factory.mktemp("hf_gpt2")
    model.save_pretrained(directory, safe_serialization=True)
    save_gpt2_tokenizer(tok, directory)
    return torch, transformers, model, directory


def test_transformers_gpt2_loads_with_the_same_logits_and_greedy_text(tok, hf_gpt2):
    torch, _, hf, directory = hf_gpt2
    ours, _ = load_gpt2(directory)
    idx = np.random.default_rng(1).integers(0, tok.vocab_size, (2, 32))
    with torch.no_grad():
        expected = hf(torch.tensor(idx)).logits.numpy()
    np.testing.assert_allclose(logits_of(ours, idx), expected, atol=1e-4)

    prompt = tok.encode("def sample(")
    ids = torch.tensor(prompt)[None]
    with torch.no_grad():
        for _ in range(12):
            ids = torch.cat([ids, hf(ids).logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    continuation = generate(ours, prompt, 12, temperature=0)[len(prompt):].tolist()
    assert continuation == ids[0, len(prompt):].tolist() and len(set(continuation)) > 1


def test_export_loads_in_transformers_with_the_same_logits(tok, hf_gpt2, tmp_path):
    torch, transformers, _, _ = hf_gpt2
    ours = tiny_gpt(tok.vocab_size, seed=5, n_embd=64, block_size=32)
    export_gpt2(ours, tok, tmp_path)
    theirs = transformers.GPT2LMHeadModel.from_pretrained(tmp_path).eval()
    idx = np.random.default_rng(2).integers(0, tok.vocab_size, (2, 32))
    with torch.no_grad():
        np.testing.assert_allclose(theirs(torch.tensor(idx)).logits.numpy(), logits_of(ours, idx), atol=1e-4)
    hf_tok = transformers.GPT2Tokenizer(str(tmp_path / "vocab.json"), str(tmp_path / "merges.txt"))
    assert hf_tok.encode(TEXT[:80]) == tok.encode(TEXT[:80]).tolist()
