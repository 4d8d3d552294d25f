"""check_module: tinylm's own layers keep the contract, and every planted contract bug is caught."""

import numpy as np
import pytest
from hypothesis import strategies as st

from tinylm import GPT, GPTConfig, Parameter, Tensor, ops
from tinylm.models.gpt import Block, CausalSelfAttention
from tinylm.nn import Embedding, LayerNorm, Linear, Module
from tinylm.tensor import xp
from tinylm.testing import check_module
from tinylm.testing import strategies as tst

X = np.random.default_rng(0).standard_normal((2, 3, 4))
CFG = GPTConfig(vocab_size=9, block_size=6, n_layer=1, n_head=2, n_embd=8)


# ---- tinylm's layers keep the contract ---------------------------------------------------------

@pytest.mark.parametrize("factory, example, shape", [
    (lambda: Linear(4, 5, np.random.default_rng(0)), X, (2, 3, 5)),
    (lambda: LayerNorm(4), X, (2, 3, 4)),
    (lambda: Embedding(9, 4, np.random.default_rng(0)), np.array([[1, 2, 2]]), (1, 3, 4)),
    (lambda: CausalSelfAttention(CFG, np.random.default_rng(0)), X.repeat(2, axis=-1), (2, 3, 8)),
    (lambda: Block(CFG, np.random.default_rng(0)), X.repeat(2, axis=-1), (2, 3, 8)),
    (lambda: GPT(CFG, seed=0), (np.array([[1, 2, 3], [0, 8, 8]]),), (2, 3, 9)),
], ids=["Linear", "LayerNorm", "Embedding", "CausalSelfAttention", "Block", "GPT"])
def test_tinylm_layers_keep_the_contract(factory, example, shape):
    assert "large inputs stay finite" in check_module(factory, example, output_shape=shape)


def test_check_module_draws_examples_from_a_strategy():
    rows = tst.float_arrays(st.tuples(st.integers(1, 3), st.just(4)), magnitude=10.0)
    check_module(lambda: LayerNorm(4), rows, output_shape=lambda s: s)


# ---- planted contract bugs --------------------------------------------------------------------

class Scale(Module):
    """The correct layer the bugs below start from: y = x ⊙ w + b."""

    def __init__(self, dim: int = 4):
        self.weight = Parameter(np.linspace(0.5, 1.5, dim))
        self.bias = Parameter(np.full(dim, 0.1))

    def forward(self, x):
        return x * self.weight + self.bias


class ParameterInADict(Scale):
    def __init__(self):
        super().__init__()
        self.extra = {"gate": Parameter(np.ones(4))}

    def forward(self, x):
        return super().forward(x) * self.extra["gate"]


class TensorNotParameter(Scale):
    def __init__(self):
        super().__init__()
        self.gate = Tensor(np.ones(4, dtype=np.float32), requires_grad=True)


class DropoutInEval(Scale):
    def forward(self, x):
        return ops.dropout(super().forward(x), 0.5, training=True)  # ignores self.training


class NaiveSoftmax(Scale):
    def forward(self, x):
        e = ops.exp(super().forward(x))  # no max subtracted: exp overflows
        return e / e.sum(axis=-1, keepdims=True)


class DataDetour(Scale):
    def forward(self, x):
        return x * Tensor(self.weight.data) + self.bias  # the weight's gradient is lost


class ZeroGradient(Scale):
    def forward(self, x):
        return x * self.weight + self.bias * 0.0


class Float64Constant(Scale):
    def forward(self, x):
        return super().forward(x) * Tensor(np.ones(4))  # a float64 constant upcasts float32


class HardCodedFloat32(Scale):
    def forward(self, x):
        y = super().forward(x)
        out = xp().empty(y.shape, dtype="float32")
        out[...] = y.data
        return Tensor.from_op(out, (y,), lambda g: (g,), "copy")


class LoadSkipsBias(Scale):
    def load_state_dict(self, state):
        self.weight.data = xp().asarray(state["weight"], dtype=self.weight.dtype)


class StateAliasesParameters(Scale):
    def state_dict(self):
        return {name: p.data for name, p in self.named_parameters()}


@pytest.mark.parametrize("layer, match", [
    (ParameterInADict, r"registration: the Parameter at ParameterInADict.extra\['gate'\] is not "
                       r"reachable from named_parameters\(\)"),
    (TensorNotParameter, r"registration: TensorNotParameter.gate is a Tensor requiring grad but not "
                         r"a Parameter"),
    (DropoutInEval, r"eval determinism: in eval\(\) mode two calls on the same input differ"),
    (NaiveSoftmax, r"large inputs stay finite: output 0 has \d+ NaN/inf values for inputs scaled by 10000"),
    (DataDetour, r"gradients reach every parameter: parameter 'weight' received no gradient"),
    (ZeroGradient, r"gradients reach every parameter: parameter 'bias' received an all-zero gradient"),
    (Float64Constant, r"output contract: output 0 has dtype float64 for float32 inputs"),
    (HardCodedFloat32, r"output contract: output 0 is float32 when the module is built and run in float64"),
    (LoadSkipsBias, r"state_dict round trip: a fresh instance given load_state_dict\(state_dict\(\)\) "
                    r"differs in output 0"),
    (StateAliasesParameters, r"state_dict round trip: state_dict\(\)\['weight'\] aliases the parameter"),
], ids=lambda v: v.__name__ if isinstance(v, type) else "")
def test_check_module_catches_a_contract_bug(layer, match):
    check_module(Scale, X)
    with pytest.raises(AssertionError, match=rf"check_module\({layer.__name__}\) {match}"):
        check_module(layer, X)


def test_check_module_checks_the_output_shape_and_allows_declared_zero_gradients():
    with pytest.raises(AssertionError, match=r"output shape \(2, 3, 4\), expected \(2, 3, 5\)"):
        check_module(Scale, X, output_shape=lambda s: (*s[:-1], 5))
    check_module(ZeroGradient, X, allow_zero_grad=("bias",))


def test_check_module_catches_a_bug_in_a_drawn_example():
    class UpcastsLongInputs(Scale):  # wrong only when hypothesis draws 3 or more rows
        def forward(self, x):
            y = super().forward(x)
            return y * Tensor(np.ones(4)) if x.shape[0] >= 3 else y
    rows = tst.float_arrays(st.tuples(st.integers(1, 4), st.just(4)))
    with pytest.raises(AssertionError, match="output contract: output 0 has dtype float64"):
        check_module(UpcastsLongInputs, rows)
