"""PyTorch as RMSNorm's oracle (optional: skipped without torch): torch.nn.functional.rms_norm, float64."""

import numpy as np
import pytest

from tinylm import Tensor
from tinylm.models.llama import rms_norm

torch = pytest.importorskip("torch")


@pytest.mark.parametrize("shape", [(1, 1), (3, 5), (2, 4, 7)])
def test_rms_norm_matches_torch_forward_and_backward(shape):
    rng = np.random.default_rng(len(shape))
    x, w, dy = rng.standard_normal(shape) * 3, rng.standard_normal(shape[-1:]), rng.standard_normal(shape)
    ours = [Tensor(a, requires_grad=True) for a in (x, w)]
    y = rms_norm(*ours, eps=1e-5)
    y.backward(dy)
    xt, wt = (torch.tensor(a, requires_grad=True) for a in (x, w))
    yt = torch.nn.functional.rms_norm(xt, shape[-1:], wt, eps=1e-5)
    yt.backward(torch.tensor(dy))
    np.testing.assert_allclose(y.numpy(), yt.detach().numpy(), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(ours[0].grad, xt.grad.numpy(), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(ours[1].grad, wt.grad.numpy(), rtol=1e-9, atol=1e-12)
