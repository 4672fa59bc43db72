"""The LM building blocks: mixers, backbone, SSD, norms and the causal convolution."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

from pararnn_ts.nn.backbone import MIXERS, Block, LanguageModel
from pararnn_ts.nn.conv import CausalConv1d
from pararnn_ts.nn.mixers import AttentionMixer, Mamba2Mixer, ParaRNNMixer
from pararnn_ts.nn.mlp import SwiGLU
from pararnn_ts.nn.norms import GatedRMSNorm, RMSNorm
from pararnn_ts.nn.ssd import ssd_chunked, ssd_sequential

DIM, HEADS, VOCAB, STEPS = 12, 2, 13, 9
TOL64 = 1e-10
#: tiny, exact-to-float64 settings per mixer (parallel Newton for the RNNs, chunks smaller than T for SSD)
MIXER_KWARGS = {
    "paragru": {"mode": "parallel"},
    "paralstm": {"mode": "parallel"},
    "transformer": {},
    "mamba2": {"state_size": 8, "chunk_size": 4},
}


def make_mixer(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    if name in ("paragru", "paralstm"):
        mixer = ParaRNNMixer(DIM, cell=name[4:], num_heads=HEADS, hidden=18, max_norm=None, mode="parallel")
    elif name == "transformer":
        mixer = AttentionMixer(DIM, num_heads=HEADS)
    else:
        mixer = Mamba2Mixer(DIM, num_heads=HEADS, state_size=8, chunk_size=4)
    return mixer.double()


def make_lm(name: str, **kwargs) -> LanguageModel:
    torch.manual_seed(0)
    return LanguageModel(VOCAB, DIM, 2, name, num_heads=HEADS, **MIXER_KWARGS[name], **kwargs).double()


def tensors_of(state) -> list[Tensor]:
    """The tensors of a nested state, in order (positions and other plain values left out)."""
    if isinstance(state, Tensor):
        return [state]
    if isinstance(state, (tuple, list)):
        return [t for s in state for t in tensors_of(s)]
    return []


def assert_close(a: Tensor, b: Tensor, tol: float = TOL64) -> None:
    assert a.shape == b.shape
    assert a.numel() == 0 or (a - b).abs().max().item() <= tol * max(1.0, a.abs().max().item())


def assert_states_close(a, b) -> None:
    ta, tb = tensors_of(a), tensors_of(b)
    assert len(ta) == len(tb)
    for x, y in zip(ta, tb, strict=True):
        assert_close(x, y)


@pytest.fixture(params=MIXERS)
def mixer_name(request) -> str:
    return request.param


# ---- mixers ---------------------------------------------------------------------------------
def test_mixer_forward_equals_steps(mixer_name):
    mixer = make_mixer(mixer_name)
    x = torch.randn(2, STEPS, DIM, dtype=torch.float64)
    y, final = mixer(x)
    state, ys = None, []
    for t in range(STEPS):
        y_t, state = mixer.step(x[:, t], state)
        ys.append(y_t)
    assert_close(y, torch.stack(ys, dim=1))
    assert_states_close(final, state)


def test_mixer_takes_an_empty_batch(mixer_name):
    mixer = make_mixer(mixer_name)
    y, state = mixer(torch.randn(0, STEPS, DIM, dtype=torch.float64))
    assert y.shape == (0, STEPS, DIM)
    y_t, _ = mixer.step(torch.randn(0, DIM, dtype=torch.float64), state)
    assert y_t.shape == (0, DIM)


def test_mixer_halves_with_carried_state(mixer_name):
    mixer = make_mixer(mixer_name)
    x = torch.randn(2, STEPS, DIM, dtype=torch.float64)
    y, final = mixer(x)
    y1, state = mixer(x[:, :4], mixer.init_state(2, x.device, x.dtype))
    y2, state = mixer(x[:, 4:], state)
    assert_close(y, torch.cat([y1, y2], dim=1))
    assert_states_close(final, state)


def test_mixer_prefill_then_steps(mixer_name):
    mixer = make_mixer(mixer_name)
    x = torch.randn(2, STEPS, DIM, dtype=torch.float64)
    y, _ = mixer(x)
    _, state = mixer(x[:, :5])
    for t in range(5, STEPS):
        y_t, state = mixer.step(x[:, t], state)
        assert_close(y[:, t], y_t)


def test_paralstm_mixer_state_is_conv_and_cell_pair():
    mixer = make_mixer("paralstm")
    conv_state, (c, h) = mixer.init_state(3, torch.device("cpu"), torch.float64)
    assert conv_state.shape == (3, 3, 18) and c.shape == h.shape == (3, 18)


def test_mamba2_state_shapes():
    mixer = Mamba2Mixer(8, num_heads=4, state_size=5, expand=2, conv_kernel=3)
    conv_state, ssm_state = mixer.init_state(2, torch.device("cpu"), torch.bfloat16)
    assert conv_state.shape == (2, 2, 16 + 10) and conv_state.dtype == torch.bfloat16
    assert ssm_state.shape == (2, 4, 4, 5) and ssm_state.dtype == torch.float32


# ---- SSD ------------------------------------------------------------------------------------
def ssd_inputs(steps: int, seed: int = 0) -> tuple[Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    batch, heads, head, state = 2, 3, 4, 5

    def rand(*shape: int) -> Tensor:
        return torch.randn(*shape, generator=g, dtype=torch.float64)

    x, B, C = rand(batch, steps, heads, head), rand(batch, steps, state), rand(batch, steps, state)
    dt = torch.rand(batch, steps, heads, generator=g, dtype=torch.float64)
    A = -3 * torch.rand(heads, generator=g, dtype=torch.float64)
    return x, dt, A, B, C, rand(batch, heads, head, state)


@pytest.mark.parametrize("steps", [1, 3, 4, 13])
@pytest.mark.parametrize("with_state", [False, True])
def test_ssd_chunked_equals_sequential(steps, with_state):
    x, dt, A, B, C, s0 = ssd_inputs(steps)
    s0 = s0 if with_state else None
    y_ref, s_ref = ssd_sequential(x, dt, A, B, C, s0)
    y, s = ssd_chunked(x, dt, A, B, C, 4, s0)
    assert_close(y_ref, y)
    assert_close(s_ref, s)


def test_ssd_chunked_gradients_equal_sequential():
    inputs = [t.requires_grad_() for t in ssd_inputs(7)]
    weight = torch.randn(2, 7, 3, 4, dtype=torch.float64)
    grads = []
    for solve in (lambda *a: ssd_sequential(*a[:5], a[5]), lambda *a: ssd_chunked(*a[:5], 3, a[5])):
        y, s = solve(*inputs)
        grads.append(torch.autograd.grad((y * weight).sum() + s.sum(), inputs))
    for a, b in zip(*grads, strict=True):
        assert_close(a, b)


# ---- smaller layers -------------------------------------------------------------------------
@pytest.mark.parametrize("kernel_size", [1, 4])
def test_causal_conv_forward_steps_and_halves(kernel_size):
    conv = CausalConv1d(5, kernel_size).double()
    x = torch.randn(2, 6, 5, dtype=torch.float64)
    y, final = conv(x)
    # y_t only sees x_{t-k+1..t}: compare with a plain depthwise convolution over a zero-padded input
    padded = torch.nn.functional.pad(x, (0, 0, kernel_size - 1, 0))
    expected = sum(padded[:, j : j + 6] * conv.weight[:, j] for j in range(kernel_size)) + conv.bias
    assert_close(y, expected)
    y1, state = conv(x[:, :2])
    y2, state = conv(x[:, 2:], state)
    assert_close(y, torch.cat([y1, y2], 1))
    assert_close(final, state)
    state = None
    for t in range(6):
        y_t, state = conv.step(x[:, t], state)
        assert_close(y[:, t], y_t)
    assert state.shape == (2, kernel_size - 1, 5)


def test_rms_norms():
    norm, gated = RMSNorm(4, eps=1e-6), GatedRMSNorm(4)
    with torch.no_grad():
        norm.weight.copy_(torch.tensor([1.0, 2.0, 3.0, 4.0]))
    x, gate = torch.randn(3, 4), torch.randn(3, 4)
    expected = x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * norm.weight
    torch.testing.assert_close(norm(x), expected)
    torch.testing.assert_close(gated(x, gate), RMSNorm(4)(x) * torch.nn.functional.silu(gate))
    assert norm(x.bfloat16()).dtype == torch.bfloat16
    with pytest.raises(ValueError, match=r"x must be \(\.\.\., 4\)"):
        norm(torch.randn(3, 1))


def _rms_norm_twin(x, weight, eps):
    wide = x.to(torch.promote_types(x.dtype, torch.float32))
    return (wide * torch.rsqrt(wide.pow(2).mean(-1, keepdim=True) + eps) * weight.to(wide.dtype)).to(x.dtype)


@pytest.mark.parametrize("shape", [(1, 1), (3, 17, 7), (2, 63, 33)])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
def test_rms_norm_equals_its_formula_with_gradients(shape, dtype):
    torch.manual_seed(0)
    norm = RMSNorm(shape[-1], eps=1e-5)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
    x = (3 * torch.randn(shape)).to(dtype).requires_grad_()
    grad = torch.randn(shape).to(dtype)
    got = norm(x)
    expected = _rms_norm_twin(x, norm.weight, norm.eps)
    tol = {"rtol": 1e-2, "atol": 1e-2} if dtype == torch.bfloat16 else {}
    torch.testing.assert_close(got, expected, **tol)
    got_grads = torch.autograd.grad(got, (x, norm.weight), grad)
    for a, b in zip(got_grads, torch.autograd.grad(expected, (x, norm.weight), grad), strict=True):
        torch.testing.assert_close(a, b, **tol)


def test_swiglu_shapes():
    assert SwiGLU(6, 10)(torch.randn(2, 3, 6)).shape == (2, 3, 6)


# ---- language model -------------------------------------------------------------------------
def test_lm_forward_equals_step_decoding(mixer_name):
    lm = make_lm(mixer_name)
    tokens = torch.randint(0, VOCAB, (2, STEPS))
    logits = lm(tokens)
    assert logits.shape == (2, STEPS, VOCAB)
    state = lm.init_state(2)
    for t in range(STEPS):
        step_logits, state = lm.step(tokens[:, t], state)
        assert_close(logits[:, t], step_logits)


def test_lm_halves_with_carried_state(mixer_name):
    lm = make_lm(mixer_name)
    tokens = torch.randint(0, VOCAB, (2, STEPS))
    logits, final = lm(tokens, return_state=True)
    first, state = lm(tokens[:, :3], return_state=True)
    second, state = lm(tokens[:, 3:], state, return_state=True)
    assert_close(logits, torch.cat([first, second], dim=1))
    assert_states_close(final, state)


@pytest.mark.parametrize("mixer_name", [name for name in MIXERS if name != "transformer"])  # its cache grows
def test_a_recurrent_lm_state_holds_no_memory_of_the_sequence_length(mixer_name):
    """A carried recurrent state is not a view of the whole sequence's tensors (which a kept state kept alive)."""
    lm = make_lm(mixer_name)

    def held(steps: int) -> int:
        with torch.no_grad():
            _, state = lm(torch.randint(0, VOCAB, (2, steps)), return_state=True)
        tensors = [t for t in torch.utils._pytree.tree_leaves(state) if isinstance(t, Tensor)]
        return sum(t.untyped_storage().nbytes() for t in tensors)

    assert held(16) == held(256)


@pytest.mark.parametrize("tie_embeddings", [True, False])
def test_lm_gradient_reaches_every_parameter(mixer_name, tie_embeddings):
    lm = make_lm(mixer_name, tie_embeddings=tie_embeddings)
    tokens = torch.randint(0, VOCAB, (2, STEPS))
    logits = lm(tokens[:, :-1])
    torch.nn.functional.cross_entropy(logits.flatten(0, 1), tokens[:, 1:].flatten()).backward()
    for name, p in lm.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().max() > 0, name


def test_lm_float32_sequential_and_parallel_rnn_agree():
    tokens = torch.randint(0, VOCAB, (2, 20))
    logits = []
    for mode in ("sequential", "parallel"):
        torch.manual_seed(0)
        logits.append(LanguageModel(VOCAB, DIM, 2, "paralstm", num_heads=HEADS, mode=mode)(tokens))
    torch.testing.assert_close(logits[0], logits[1], rtol=1e-5, atol=1e-5)


def test_lm_dclm_init():
    torch.manual_seed(0)
    lm = LanguageModel(512, 64, 8, "transformer", num_heads=4, init_std=0.02)
    mixer = lm.blocks[0].mixer
    assert lm.embedding.weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert mixer.qkv_proj.weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert mixer.out_proj.weight.std().item() == pytest.approx(0.02 / math.sqrt(16), rel=0.1)
    assert lm.blocks[0].mlp.out_proj.weight.std().item() == pytest.approx(0.02 / math.sqrt(16), rel=0.1)


def test_lm_without_mlp():
    lm = make_lm("mamba2", mlp_ratio=0)
    assert all(block.mlp is None for block in lm.blocks)
    assert lm(torch.randint(0, VOCAB, (1, 5))).shape == (1, 5, VOCAB)


def test_transformer_parameter_count_by_hand():
    dim, layers, vocab = 16, 3, 50
    lm = LanguageModel(vocab, dim, layers, "transformer", num_heads=2, mlp_ratio=2, mlp_multiple_of=8)
    per_block = 3 * dim + 4 * dim * dim + 3 * dim * lm.mlp_hidden  # two norms, scale, qkv+out, SwiGLU
    assert lm.mlp_hidden == 32
    assert lm.num_parameters(exclude_embeddings=True) == layers * per_block + dim
    assert lm.num_parameters() == layers * per_block + dim + vocab * dim
    untied = LanguageModel(vocab, dim, layers, "transformer", num_heads=2, mlp_ratio=2, tie_embeddings=False)
    assert untied.num_parameters() == untied.num_parameters(exclude_embeddings=True) + 2 * vocab * dim


def test_meta_device_construction(mixer_name):
    kwargs = {"vocab_size": VOCAB, "dim": 32, "num_layers": 2, "mixer": mixer_name, "num_heads": 4}
    with torch.device("meta"):
        meta = LanguageModel(**kwargs)
    assert all(p.is_meta for p in meta.parameters())
    assert meta.num_parameters() == LanguageModel(**kwargs).num_parameters()


def test_meta_device_counts_a_billion_parameter_config():
    with torch.device("meta"):
        lm = LanguageModel(50_432, 2048, 24, "paragru", num_heads=4)
    assert 0.9e9 < lm.num_parameters() < 2e9


def test_block_passes_mixer_state():
    block = Block(DIM, make_mixer("paragru"), mlp_hidden=8).double()
    x = torch.randn(2, 5, DIM, dtype=torch.float64)
    y, state = block(x, block.init_state(2, x.device, x.dtype))
    y_t, _ = block.step(x[:, 0], block.init_state(2, x.device, x.dtype))
    assert y.shape == x.shape
    assert_close(y[:, 0], y_t)


# ---- errors ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda: ParaRNNMixer(10, num_heads=3), "dim=10"),
        (lambda: ParaRNNMixer(12, num_heads=4, hidden=10), "hidden=10"),
        (lambda: ParaRNNMixer(12, cell="rnn"), "cell"),
        (lambda: AttentionMixer(10, num_heads=3), "dim=10"),
        (lambda: AttentionMixer(12, num_heads=4), "even"),
        (lambda: Mamba2Mixer(5, num_heads=4), "inner_size=10"),
        (lambda: Mamba2Mixer(8, num_heads=2, chunk_size=0), "chunk_size"),
        (lambda: CausalConv1d(4, kernel_size=0), "kernel_size"),
        (lambda: LanguageModel(VOCAB, 10, 1, "transformer", num_heads=3), "dim=10"),
        (lambda: LanguageModel(VOCAB, DIM, 1, "lstm"), "mixer"),
        (lambda: LanguageModel(VOCAB, DIM, 0), "num_layers"),
        (lambda: Block(DIM, AttentionMixer(DIM), mlp_hidden=-1), "mlp_hidden"),
    ],
)
def test_bad_arguments_raise(build, match):
    with pytest.raises(ValueError, match=match):
        build()


def test_bad_tokens_and_state_raise():
    lm = make_lm("transformer")
    with pytest.raises(ValueError, match="tokens"):
        lm(torch.randn(2, 3))
    with pytest.raises(ValueError, match="token"):
        lm.step(torch.zeros(2, 1, dtype=torch.long))
    with pytest.raises(ValueError, match="num_layers"):
        lm(torch.zeros(2, 3, dtype=torch.long), state=[None])
