"""Masked-LM pre-training: BERT's masking recipe, the bidirectional encoder, and training it."""

import numpy as np
import pytest
from click.testing import CliRunner

from tinylm.checkpoint import load_model
from tinylm.cli import cli
from tinylm.mlm import IGNORE_INDEX, MaskedBatches, MaskingRecipe, mask_tokens
from tinylm.models import Encoder, EncoderConfig
from tinylm.models.encoder import bidirectional_attention, padding_mask
from tinylm.run import new_run, resume_run
from tinylm.testing import check_gradients
from tinylm.tokenizers import CharTokenizer, WithSpecialTokens, tokenizer_from_dict
from tinylm.train import TrainConfig, estimate_loss

TINY_ENCODER = dict(block_size=16, n_layer=1, n_head=2, n_embd=32, dropout=0.0, bias=True)
TEXT = "".join(f"line {i}: the quick brown fox jumps over the lazy dog {i * 7 % 13}\n"
               for i in range(300))


# -- the masking recipe ------------------------------------------------------------------------
def test_mask_tokens_follows_berts_recipe():
    V = 50
    x = np.random.default_rng(0).integers(0, V, size=(400, 100))
    recipe = MaskingRecipe(mask_id=V, n_ordinary=V)
    inputs, targets = mask_tokens(x, recipe, np.random.default_rng(1))

    chosen = targets != IGNORE_INDEX
    assert (chosen.sum(axis=1) == 15).all()                          # 15% of 100, in every row
    np.testing.assert_array_equal(targets[chosen], x[chosen])         # loss targets: the originals
    np.testing.assert_array_equal(inputs[~chosen], x[~chosen])        # the rest untouched
    masked = (inputs == V)[chosen].mean()
    kept = (inputs == x)[chosen].mean()
    randomised = ((inputs != V) & (inputs != x))[chosen].mean()
    assert abs(masked - 0.8) < 0.015, masked                          # 6,000 chosen: sd ~0.005
    assert abs(randomised - 0.1 * (1 - 1 / V)) < 0.012, randomised    # a random draw can hit x
    assert abs(kept - (0.1 + 0.1 / V)) < 0.012, kept
    assert inputs.max() <= V and inputs[inputs != V].max() < V        # never a special token but [MASK]


def test_mask_tokens_is_seeded():
    x = np.arange(64).reshape(4, 16) % 10
    recipe = MaskingRecipe(mask_id=10, n_ordinary=10)
    a = mask_tokens(x, recipe, np.random.default_rng(3))
    b = mask_tokens(x, recipe, np.random.default_rng(3))
    c = mask_tokens(x, recipe, np.random.default_rng(4))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[1], c[1])


def test_short_sequences_still_get_one_masked_position():
    x = np.ones((8, 3), dtype=np.int64)
    _, targets = mask_tokens(x, MaskingRecipe(mask_id=5, n_ordinary=5), np.random.default_rng(0))
    assert ((targets != IGNORE_INDEX).sum(axis=1) == 1).all()


def test_masked_batches_resume_exactly():
    ids = np.arange(500) % 37
    recipe = MaskingRecipe(mask_id=37, n_ordinary=37)
    sampler = MaskedBatches(ids, 16, 4, seed=7, recipe=recipe)
    sampler.next()
    saved = sampler.state()
    expected = [sampler.next() for _ in range(3)]
    again = MaskedBatches(ids, 16, 4, seed=99, recipe=recipe)
    again.set_state(saved)
    for (xe, ye), (xa, ya) in zip(expected, (again.next() for _ in range(3))):
        np.testing.assert_array_equal(xe, xa)
        np.testing.assert_array_equal(ye, ya)


@pytest.mark.parametrize("bad", [{}, {"windows": {}, "masks": {"bit_generator": "MT19937"}}])
def test_masked_batches_reject_a_malformed_state(bad):
    from tinylm.errors import CheckpointError
    sampler = MaskedBatches(np.arange(100) % 5, 8, 2, seed=0, recipe=MaskingRecipe(5, 5))
    with pytest.raises(CheckpointError, match="sampler state"):
        sampler.set_state(bad)


def test_special_tokens_extend_the_vocabulary_and_round_trip():
    tok = WithSpecialTokens(CharTokenizer.from_text("abc"))
    assert tok.vocab_size == 6
    assert [tok.special_id(n) for n in ("[PAD]", "[MASK]", "[CLS]")] == [3, 4, 5]
    ids = np.concatenate([[5], tok.encode("abc"), [4, 3]])
    assert tok.decode(ids) == "[CLS]abc[MASK][PAD]"
    assert tok.encode("cab").max() < 3                               # text never makes a special id
    assert tokenizer_from_dict(tok.to_dict()) == tok


# -- the encoder -------------------------------------------------------------------------------
def test_attention_gradients_with_a_padding_mask():
    rng = np.random.default_rng(0)
    q, k, v = (rng.normal(size=(2, 2, 4, 3)) for _ in range(3))
    keep = np.array([[True, True, True, False], [True, True, False, False]])
    check_gradients(lambda q, k, v: bidirectional_attention(q, k, v, padding_mask(keep)),
                    q, k, v, names=["q", "k", "v"])


def test_encoder_sees_both_ways_and_never_sees_padding(backend):
    model = Encoder(EncoderConfig(vocab_size=20, **TINY_ENCODER), seed=0).eval()
    x = np.random.default_rng(0).integers(0, 20, size=(2, 8))
    later = x.copy()
    later[:, -1] = (later[:, -1] + 1) % 20
    first = model.features(x).numpy()[:, 0]
    assert np.abs(model.features(later).numpy()[:, 0] - first).max() > 1e-4  # no causal mask

    keep = np.ones_like(x, dtype=bool)
    keep[:, 5:] = False
    padded = model.features(x, keep).numpy()[:, :5]
    repadded = model.features(later, keep).numpy()[:, :5]             # only padding differs
    np.testing.assert_allclose(repadded, padded, rtol=0, atol=1e-6)
    np.testing.assert_allclose(model.features(x[:, :5]).numpy(), padded, rtol=1e-5, atol=1e-5)


# -- training ----------------------------------------------------------------------------------
def _config(max_iters, **overrides):
    base = dict(batch_size=16, max_iters=max_iters, learning_rate=3e-3, min_lr=3e-4,
                warmup_iters=5, eval_interval=max_iters, eval_iters=8, log_interval=5, seed=1)
    return TrainConfig(**{**base, **overrides})


def test_mlm_pretraining_on_the_default_corpus_lowers_masked_loss(backend, tmp_path):
    run = new_run(TINY_ENCODER, _config(60), None, 0.1, tmp_path / "enc", objective="mlm")
    model = run.state.model
    assert isinstance(model, Encoder) and run.tokenizer.vocab_size == model.config.vocab_size
    start = estimate_loss(model, run.val_ids, 16, 16, 8, seed=3, batches=run.state.batches)
    run.execute()
    end = estimate_loss(model, run.val_ids, 16, 16, 8, seed=3, batches=run.state.batches)
    assert start > 4.0                                     # ~log(vocab): nothing learned yet
    assert end < start - 1.0, (start, end)                 # measured: 4.56 -> ~3.3 in 60 steps


def test_mlm_checkpoint_round_trips_and_resumes_exactly(tmp_path):
    data = tmp_path / "corpus.txt"
    data.write_text(TEXT)
    cfg = dict(max_iters=8, batch_size=4, eval_interval=4, eval_iters=2, log_interval=1)
    model_fields = {**TINY_ENCODER, "dropout": 0.1}

    def losses(run):
        seen = []
        run.execute(on_event=lambda e: seen.append(e["loss"]) if e["event"] == "step" else None)
        return seen

    straight = losses(new_run(model_fields, _config(**cfg), str(data), 0.1, tmp_path / "a", "mlm"))
    first = new_run(model_fields, _config(**{**cfg, "max_iters": 4}), str(data), 0.1,
                    tmp_path / "b", "mlm")
    head = losses(first)
    resumed = resume_run(tmp_path / "b", {"max_iters": 8})
    assert resumed.objective == "mlm" and isinstance(resumed.state.model, Encoder)
    assert head + losses(resumed) == straight              # windows, masks and dropout all resume

    model, tokenizer, ckpt = load_model(tmp_path / "a")
    assert isinstance(model, Encoder) and ckpt.train["objective"] == "mlm"
    assert tokenizer.special_id("[MASK]") == tokenizer.vocab_size - 2
    x = tokenizer.encode(TEXT[:16])[None, :]
    np.testing.assert_array_equal(model(x)[0].numpy(), resumed.state.model.eval()(x)[0].numpy())


def test_cli_trains_an_encoder_with_objective_mlm(tmp_path):
    data = tmp_path / "corpus.txt"
    data.write_text(TEXT)
    args = ["train", "--objective", "mlm", "--data", data, "--out", tmp_path / "enc", "--n-layer",
            "1", "--n-head", "2", "--n-embd", "16", "--block-size", "16", "--batch-size", "4",
            "--max-iters", "4", "--eval-interval", "2", "--eval-iters", "1", "--warmup-iters", "1"]
    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("done: 4 steps") and "tinylm finetune" in result.stderr
    _, _, ckpt = load_model(tmp_path / "enc")
    assert ckpt.model_type == "encoder"

    resumed = CliRunner().invoke(cli, ["train", "--resume", "--out", str(tmp_path / "enc"),
                                       "--max-iters", "6"])
    assert resumed.exit_code == 0, resumed.output
    assert resumed.stdout.startswith("done: 6 steps")
    clash = CliRunner().invoke(cli, ["train", "--resume", "--objective", "clm", "--out",
                                     str(tmp_path / "enc"), "--max-iters", "8"])
    assert clash.exit_code == 2 and "--objective mlm" in clash.stderr

    scored = CliRunner().invoke(cli, ["eval", "--ckpt", str(tmp_path / "enc"), "--json",
                                      "--batches", "2"])
    assert scored.exit_code == 0, scored.output
