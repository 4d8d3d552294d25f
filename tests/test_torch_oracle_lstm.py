"""PyTorch as the LSTM's oracle (optional: skipped without torch): torch.nn.LSTM, float64, same weights.

The op (forward and backward through time, with initial states) and the whole
language model (loss and every parameter gradient) agree with PyTorch to 1e-6
relative, on the NumPy reference and on every other available backend.
"""

import numpy as np
import pytest

from tinylm import Tensor, ops, set_default_dtype
from tinylm.models import LSTM, LSTMConfig
from tinylm.models.lstm import lstm

torch = pytest.importorskip("torch")

RTOL, ATOL = 1e-6, 1e-9


def torch_lstm(layers, n_in: int, n_hidden: int):
    """torch.nn.LSTM (batch_first, float64) holding the weights of tinylm LSTMLayers.

    tinylm keeps W_ih as (I, 4H) (x W) and one bias; PyTorch (4H, I) and two biases
    whose sum acts: b_ih takes ours, b_hh is zero.
    """
    net = torch.nn.LSTM(n_in, n_hidden, num_layers=len(layers), batch_first=True,
                        dtype=torch.float64)
    with torch.no_grad():
        for i, layer in enumerate(layers):
            getattr(net, f"weight_ih_l{i}").copy_(torch.tensor(layer.weight_ih.numpy().T))
            getattr(net, f"weight_hh_l{i}").copy_(torch.tensor(layer.weight_hh.numpy().T))
            getattr(net, f"bias_ih_l{i}").copy_(torch.tensor(layer.bias.numpy()))
            getattr(net, f"bias_hh_l{i}").zero_()
    return net


def close(ours, theirs, what):
    np.testing.assert_allclose(np.asarray(ours), theirs.detach().numpy(), rtol=RTOL, atol=ATOL,
                               err_msg=what)


@pytest.mark.parametrize("B, T, H", [(1, 1, 1), (2, 5, 3), (3, 17, 8)])
def test_the_lstm_op_matches_torch_forward_and_backward(backend, B, T, H):
    set_default_dtype("float64")
    rng = np.random.default_rng(B * 100 + T)
    x, w_ih, w_hh, b = (rng.standard_normal(s) for s in ((B, T, 4), (4, 4 * H), (H, 4 * H), (4 * H,)))
    h0, c0, dh = rng.standard_normal((B, H)), rng.standard_normal((B, H)), rng.standard_normal((B, T, H))
    ours = [Tensor(backend.from_host(a), requires_grad=True) for a in (x, w_ih, w_hh, b, h0, c0)]
    h, c = lstm(ops.linear(ours[0], ours[1], ours[3]), ours[2], ours[4], ours[5])
    dc_last = rng.standard_normal((B, H))
    loss = (h * Tensor(backend.from_host(dh))).sum() + (c[:, -1] * Tensor(backend.from_host(dc_last))).sum()
    loss.backward()

    net = torch.nn.LSTM(4, H, batch_first=True, dtype=torch.float64)
    with torch.no_grad():
        net.weight_ih_l0.copy_(torch.tensor(w_ih.T))
        net.weight_hh_l0.copy_(torch.tensor(w_hh.T))
        net.bias_ih_l0.copy_(torch.tensor(b))
        net.bias_hh_l0.zero_()
    xt, h0t, c0t = (torch.tensor(a, requires_grad=True) for a in (x, h0, c0))
    ht, (_, ct) = net(xt, (h0t[None], c0t[None]))
    ((ht * torch.tensor(dh)).sum() + (ct[0] * torch.tensor(dc_last)).sum()).backward()

    close(h.numpy(), ht, "h")
    close(c.numpy()[:, -1], ct[0], "c_T")
    for name, mine, theirs in (("x", ours[0], xt.grad), ("h0", ours[4], h0t.grad),
                               ("c0", ours[5], c0t.grad), ("W_ih", ours[1], net.weight_ih_l0.grad.T),
                               ("W_hh", ours[2], net.weight_hh_l0.grad.T),
                               ("b", ours[3], net.bias_ih_l0.grad)):
        close(backend.to_host(mine.grad), theirs, f"gradient of {name} on {backend.name}")


def test_the_lstm_language_model_matches_torch_loss_and_every_gradient():
    set_default_dtype("float64")
    cfg = LSTMConfig(vocab_size=11, block_size=12, n_layer=2, n_embd=6)
    model = LSTM(cfg, seed=1)
    rng = np.random.default_rng(2)
    idx, targets = rng.integers(0, 11, (3, 12)), rng.integers(0, 11, (3, 12))
    _, loss = model(idx, targets)
    loss.backward()

    emb = torch.tensor(model.wte.weight.numpy(), requires_grad=True)
    net = torch_lstm(model.layers, 6, 6)
    head_w = torch.tensor(model.lm_head.weight.numpy(), requires_grad=True)
    head_b = torch.tensor(model.lm_head.bias.numpy(), requires_grad=True)
    h, _ = net(emb[torch.tensor(idx)])
    logits = h @ head_w + head_b
    loss_t = torch.nn.functional.cross_entropy(logits.reshape(-1, 11), torch.tensor(targets).reshape(-1))
    loss_t.backward()

    close(loss.item(), loss_t, "loss")
    grads = dict(model.named_parameters())
    close(grads["wte.weight"].grad, emb.grad, "wte.weight")
    close(grads["lm_head.weight"].grad, head_w.grad, "lm_head.weight")
    close(grads["lm_head.bias"].grad, head_b.grad, "lm_head.bias")
    for i in range(2):
        close(grads[f"layers.{i}.weight_ih"].grad, getattr(net, f"weight_ih_l{i}").grad.T, f"layer {i} W_ih")
        close(grads[f"layers.{i}.weight_hh"].grad, getattr(net, f"weight_hh_l{i}").grad.T, f"layer {i} W_hh")
        close(grads[f"layers.{i}.bias"].grad, getattr(net, f"bias_ih_l{i}").grad, f"layer {i} bias")
