"""Text generation: the prompt in one parallel forward, then one :meth:`LanguageModel.step` per new token.

pararnn-ts generate --ckpt runs/tiny_paragru/version_0/checkpoints/last.ckpt --prompt "def "

or through Lightning's ``predict`` (``CausalLM.predict_step``; prompts
and sampling are the data module's; the samples also go to ``predictions.jsonl`` in the run's log folder):

pararnn-ts predict -c experiments/lm/tiny_paragru.yaml --ckpt_path <that last.ckpt> \
    --data.init_args.predict_prompts='["def ", "import "]' --data.init_args.temperature=0.5
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from ..nn import LanguageModel
from ..outputs import read_checkpoint_file
from .tokenizers import Tokenizer, check_vocab_size, load_tokenizer

if TYPE_CHECKING:  # module.py imports this file (CausalLM.predict_step generates text)
    from .module import CausalLM

WRITTEN_BY = "pararnn-ts fit -c experiments/lm/... writes those"


def check_sampling(max_new_tokens: int, temperature: float, top_k: int | None) -> None:
    """Raise ``ValueError`` unless ``max_new_tokens >= 0``, ``temperature >= 0`` and ``top_k`` is ``None`` or >= 1."""
    if max_new_tokens < 0 or temperature < 0 or (top_k is not None and top_k < 1):
        raise ValueError(
            f"generate: need max_new_tokens >= 0, temperature >= 0 and top_k >= 1 or None, "
            f"got {max_new_tokens}, {temperature}, {top_k}"
        )


def sample(logits: Tensor, temperature: float, top_k: int | None, generator: torch.Generator) -> Tensor:
    """One token per row of ``logits`` ``(B, V)`` → ``(B,)``; ``temperature=0`` is greedy."""
    if temperature == 0:
        return logits.argmax(-1)
    logits = logits.float() / temperature
    if top_k is not None:
        kth = logits.topk(min(top_k, logits.shape[-1]), dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    return torch.multinomial(logits.softmax(-1), 1, generator=generator).squeeze(-1)


@torch.no_grad()
def generate_tokens(
    model: LanguageModel,
    prompt: Tensor,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    seed: int = 0,
    stop_token: int | None = None,
) -> Tensor:
    """``prompt`` ``(B, T)`` token ids, ``T ≥ 1`` → ``(B, N)`` sampled continuations, ``N = max_new_tokens``, or
    fewer once every row has sampled ``stop_token`` (rows that sampled it earlier go on after it).

    The prompt goes through one parallel forward; each new token then costs one ``step`` (constant
    memory per token for the RNN and SSM mixers). Sampling draws from a generator seeded with ``seed``.
    """
    check_sampling(max_new_tokens, temperature, top_k)
    if prompt.dim() != 2 or prompt.shape[1] < 1:
        raise ValueError(f"generate: prompt must be (batch, time) with time >= 1, got {tuple(prompt.shape)}")
    was_training = model.training
    model.eval()
    generator = torch.Generator(prompt.device).manual_seed(seed)
    logits, state = model(prompt, return_state=True)
    logits = logits[:, -1]
    new = []
    stopped = torch.zeros(prompt.shape[0], dtype=torch.bool, device=prompt.device)
    for i in range(max_new_tokens):
        new.append(sample(logits, temperature, top_k, generator))
        if stop_token is not None:
            stopped |= new[-1] == stop_token
            if bool(stopped.all()):
                break
        if i + 1 < max_new_tokens:
            logits, state = model.step(new[-1], state)
    model.train(was_training)
    return torch.stack(new, dim=1) if new else prompt.new_empty(prompt.shape[0], 0)


def generate(
    model: CausalLM | LanguageModel,
    tokenizer: Tokenizer,
    prompt: str,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    seed: int = 0,
    stop_at_eos: bool = True,
) -> str:
    """The text of ``max_new_tokens`` tokens sampled after ``prompt`` (the prompt itself not included), ended
    before the first end-of-text token if ``stop_at_eos`` (the model would go on with a new document).

    An empty prompt starts from the tokenizer's end-of-text token.
    """
    lm = model if isinstance(model, LanguageModel) else model.model
    ids = tokenizer.encode(prompt) or ([] if tokenizer.eos_id is None else [tokenizer.eos_id])
    if not ids:
        raise ValueError("generate: empty prompt and the tokenizer has no end-of-text token to start from")
    prompt_ids = torch.tensor([ids], device=lm.embedding.weight.device)
    stop = tokenizer.eos_id if stop_at_eos else None
    new = generate_tokens(lm, prompt_ids, max_new_tokens, temperature, top_k, seed, stop)[0].tolist()
    return tokenizer.decode(new[: new.index(stop)] if stop in new else new)


def load_checkpoint(path: str, tokenizer: str | None = None) -> tuple[CausalLM, Tokenizer]:
    """The :class:`CausalLM` of a Lightning checkpoint, on CPU, and its tokenizer: ``tokenizer`` if
    given, else the one its data module was configured with (``"byte"`` if it recorded none).

    Checkpoints of other model classes, and tokenizers with more tokens than the model's ``vocab_size``, are
    refused with a ``ValueError`` before the model is built.
    """
    from .module import CausalLM  # not at the top: module.py imports this file

    checkpoint = read_checkpoint_file(path, "--ckpt", WRITTEN_BY)
    hparams = checkpoint.get("hyper_parameters", {})
    trained = hparams.get("_class_path")
    if trained is not None and not is_imported_subclass(trained, CausalLM):
        raise ValueError(f"{path} is a {trained} checkpoint, not a CausalLM one ({WRITTEN_BY})")
    if "vocab_size" not in hparams:
        raise ValueError(f"{path} holds no CausalLM hyperparameters: not a CausalLM checkpoint ({WRITTEN_BY})")
    spec = tokenizer or checkpoint.get("datamodule_hyper_parameters", {}).get("tokenizer", "byte")
    loaded = load_tokenizer(spec)
    fix = f"{path} was trained with another one: pass that as --tokenizer, or leave --tokenizer out (the checkpoint's)"
    check_vocab_size(loaded, hparams["vocab_size"], fix)
    return CausalLM.load_from_checkpoint(path, map_location="cpu"), loaded


def is_imported_subclass(class_path: str, cls: type) -> bool:
    """Whether ``class_path`` (``"package.module.Class"``) names ``cls`` or a subclass, in a module already imported."""
    module, _, name = class_path.rpartition(".")
    found = getattr(sys.modules.get(module), name, None)
    return isinstance(found, type) and issubclass(found, cls)


def at_least(minimum: float, kind: type[int] | type[float]) -> Callable[[str], Any]:
    """An argparse ``type``: ``kind(text)``, refused below ``minimum`` (and NaN)."""

    def parse(text: str) -> int | float:
        value = kind(text)
        if not value >= minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {text}")
        return value

    parse.__name__ = kind.__name__  # argparse's "invalid int value: 'x'"
    return parse


def existing_file(text: str) -> str:
    """An argparse ``type``: the path of a file that exists."""
    if not os.path.isfile(text):
        raise argparse.ArgumentTypeError(f"no file at {text} (give a CausalLM checkpoint; {WRITTEN_BY})")
    return text


def main(args: Sequence[str] | None = None) -> None:
    """``pararnn-ts generate``: print ``--prompt`` and its sampled continuation."""
    parser = argparse.ArgumentParser(
        prog="pararnn-ts generate",
        description="Generate text from a CausalLM checkpoint.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--ckpt", required=True, type=existing_file, help="a checkpoint of `pararnn-ts fit -c experiments/lm/...`"
    )
    parser.add_argument("--prompt", default="", help="text to continue (empty: start a new document)")
    parser.add_argument("--max-new-tokens", type=at_least(0, int), default=200, help="tokens to sample")
    parser.add_argument("--temperature", type=at_least(0, float), default=0.8, help="0: greedy")
    parser.add_argument("--top-k", type=at_least(1, int), default=None, help="sample among the k likeliest tokens")
    parser.add_argument("--seed", type=int, default=0, help="seeds the sampling")
    parser.add_argument("--tokenizer", default=None, help="'byte' or a BPE JSON file (None: the checkpoint's)")
    parser.add_argument(
        "--stop-at-eos",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="end the text before the first end-of-text token (the model would go on with a new document)",
    )
    opts = parser.parse_args(args)
    model, tokenizer = load_checkpoint(opts.ckpt, opts.tokenizer)
    text = generate(
        model, tokenizer, opts.prompt, opts.max_new_tokens, opts.temperature, opts.top_k, opts.seed, opts.stop_at_eos
    )
    print(opts.prompt + text)


if __name__ == "__main__":
    main()
