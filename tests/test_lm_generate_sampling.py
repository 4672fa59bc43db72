"""Sampling text: finite at every temperature, nucleus (top-p), only ids the tokenizer knows, and the settings that
are refused (in Python, in ``TextDataModule`` and on ``pararnn-ts generate``'s command line)."""

from __future__ import annotations

import math

import pytest
import torch

from pararnn_ts.lm import ByteTokenizer, TextDataModule
from pararnn_ts.lm.generate import check_sampling, generate, generate_tokens, sample
from pararnn_ts.nn import LanguageModel

TINY = {"dim": 32, "num_layers": 1, "num_heads": 2}


def draws(logits: list[float], n: int, temperature: float = 1.0, top_k: int | None = None, top_p: float = 1.0):
    """``n`` tokens sampled from one row of ``logits``, as a list."""
    rows = torch.tensor(logits).repeat(n, 1)
    return sample(rows, temperature, top_k, top_p, torch.Generator().manual_seed(0)).tolist()


def test_top_p_samples_only_from_the_nucleus():
    probs = [0.05, 0.3, 0.1, 0.5, 0.05]  # the likeliest first: 3, 1, 2, then 0 and 4
    logits = [math.log(p) for p in probs]
    nucleus = draws(logits, 4000, top_p=0.75)  # 0.5 < 0.75 <= 0.5 + 0.3: tokens 3 and 1
    assert set(nucleus) == {1, 3}
    assert nucleus.count(3) / len(nucleus) == pytest.approx(0.5 / 0.8, abs=0.03)  # renormalised
    assert set(draws(logits, 4000, top_p=0.85)) == {1, 2, 3}
    assert set(draws(logits, 200, top_p=0.4)) == {3}  # the likeliest token alone reaches p
    assert set(draws(logits, 4000)) == {0, 1, 2, 3, 4}  # top_p=1: off
    assert set(draws(logits, 4000, top_k=3, top_p=0.8)) == {1, 3}  # top-k first: 3 and 1 hold 0.8 / 0.9 of it


def test_top_p_in_generation_follows_the_nucleus_of_each_step():
    torch.manual_seed(0)
    model = LanguageModel(257, **TINY)
    prompt = torch.randint(0, 256, (3, 4))
    greedy = generate_tokens(model, prompt, 8, temperature=0)
    assert torch.equal(generate_tokens(model, prompt, 8, temperature=1.0, top_p=1e-6), greedy)
    sampled = generate_tokens(model, prompt, 8, temperature=1.0, top_p=0.3, seed=1)
    assert torch.equal(sampled, generate_tokens(model, prompt, 8, temperature=1.0, top_p=0.3, seed=1))
    sequence = torch.cat([prompt, sampled], dim=1)
    with torch.no_grad():
        probs = model(sequence[:, :-1])[:, 3:].softmax(-1)  # the distributions the 8 tokens were drawn from
    chosen = probs.gather(-1, sampled.unsqueeze(-1))
    likelier = torch.where(probs > chosen, probs, 0).sum(-1)
    assert (likelier < 0.3 + 1e-5).all()  # each token is within its step's nucleus


@pytest.mark.parametrize("temperature", [1e-40, 1e-300, 5e-324])
def test_a_tiny_temperature_samples_the_likeliest_token(temperature):
    logits = 5 * torch.randn(64, 257, generator=torch.Generator().manual_seed(0))
    picked = sample(logits, temperature, None, 1.0, torch.Generator().manual_seed(0))
    assert torch.equal(picked, logits.argmax(-1))
    torch.manual_seed(0)
    model, prompt = LanguageModel(257, **TINY), torch.randint(0, 256, (2, 4))
    assert torch.equal(generate_tokens(model, prompt, 5, temperature), generate_tokens(model, prompt, 5, 0))


def test_a_padded_vocabulary_never_yields_ids_the_tokenizer_does_not_know():
    torch.manual_seed(0)
    model = LanguageModel(400, **TINY, tie_embeddings=False)  # 400 rows, as padded configs have; the tokenizer 257
    with torch.no_grad():
        model.lm_head.weight[:257] = 0  # every byte token's logit is 0
        model.lm_head.weight[257:] *= 100  # some padding rows' logits far above it
    prompt = torch.tensor([list(b"def ")])
    assert (generate_tokens(model, prompt, 10, temperature=0) >= 257).all()  # unmasked, padding wins
    for temperature in (0, 1.0):
        assert (generate_tokens(model, prompt, 10, temperature, vocab_limit=257) < 257).all()
        assert isinstance(generate(model, ByteTokenizer(), "def ", 10, temperature, stop_at_eos=False), str)


@pytest.mark.parametrize(
    "setting, message",
    [
        ({"temperature": math.inf}, "0 <= temperature < inf"),
        ({"temperature": math.nan}, "0 <= temperature < inf"),
        ({"top_p": 0.0}, "0 < top_p <= 1"),
        ({"top_p": 1.5}, "0 < top_p <= 1"),
        ({"top_p": math.nan}, "0 < top_p <= 1"),
        ({"seed": 2**64}, "0 <= seed <= 18446744073709551615"),
        ({"seed": -1}, "0 <= seed <= 18446744073709551615"),
    ],
)
def test_out_of_range_sampling_settings_are_refused(setting, message):
    settings = {"max_new_tokens": 1, "temperature": 1.0, "top_k": None, **setting}
    with pytest.raises(ValueError, match=rf"generate: need {message} .*\(got {next(iter(setting.values()))}\)"):
        check_sampling(**settings)
    with pytest.raises(ValueError, match=message):
        generate_tokens(LanguageModel(257, **TINY), torch.zeros(1, 1, dtype=torch.long), **settings)
    if "seed" not in setting:  # the data module's seed also seeds its training windows
        with pytest.raises(ValueError, match=message):
            TextDataModule(**setting)
