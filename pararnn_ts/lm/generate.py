"""Text generation: the prompt in one parallel forward, then one :meth:`LanguageModel.step` per new token.

pararnn-ts generate --ckpt runs/tiny_paragru/version_0/checkpoints/last.ckpt --prompt "def "

or through Lightning's ``predict`` (``CausalLM.predict_step``; prompts
and sampling are the data module's; the samples also go to ``predictions.jsonl`` in the run's log folder):

pararnn-ts predict -c experiments/lm/tiny_paragru.yaml --ckpt_path <that last.ckpt> \
    --data.init_args.predict_prompts='["def ", "import "]' --data.init_args.temperature=0.5
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from ..cells.factory import require_recorded_cell
from ..nn import LanguageModel
from ..outputs import read_checkpoint_file
from .tokenizers import BPETokenizer, Tokenizer, check_vocab_size, import_tokenizers, load_tokenizer

if TYPE_CHECKING:  # module.py imports this file (CausalLM.predict_step generates text)
    from .module import CausalLM

WRITTEN_BY = "pararnn-ts fit -c experiments/lm/... writes those"
#: seeds of ``torch.Generator.manual_seed``: unsigned 64-bit integers
MAX_SEED = 2**64 - 1
#: the checkpoint entry where ``CausalLM`` records its tokenizer (:func:`tokenizer_record`)
TOKENIZER_KEY = "tokenizer"


def check_sampling(
    max_new_tokens: int,
    temperature: float,
    top_k: int | None,
    top_p: float = 1.0,
    seed: int = 0,
    owner: str = "generate",
) -> None:
    """Raise ``ValueError`` naming ``owner`` and every setting outside its range: ``max_new_tokens >= 0``, a finite
    ``temperature >= 0``, ``top_k >= 1`` or ``None``, ``0 < top_p <= 1`` and ``0 <= seed <= 2**64 - 1``."""
    rules = [
        ("max_new_tokens >= 0", max_new_tokens, max_new_tokens >= 0),
        ("0 <= temperature < inf (0: greedy)", temperature, 0 <= temperature < math.inf),
        ("top_k >= 1 or None", top_k, top_k is None or top_k >= 1),
        ("0 < top_p <= 1 (1: off)", top_p, 0 < top_p <= 1),
        (f"0 <= seed <= {MAX_SEED}", seed, 0 <= seed <= MAX_SEED),
    ]
    broken = [f"{rule} (got {value!r})" for rule, value, ok in rules if not ok]
    if broken:
        raise ValueError(f"{owner}: need {'; '.join(broken)}")


def check_prompt(prompt: Any, where: str = "generate: prompt") -> str:
    """``prompt`` if it is text UTF-8 can encode, else a ``ValueError`` naming ``where`` (a terminal in another
    encoding hands Python its bytes as lone surrogates) or a ``TypeError`` for what is not a ``str``."""
    if not isinstance(prompt, str):
        raise TypeError(
            f"{where} must be a str, got {type(prompt).__name__}; for several prompts call generate once per prompt, "
            "or generate_tokens with a (batch, time) tensor of prompts of one length"
        )
    try:
        prompt.encode("utf-8")
    except UnicodeEncodeError as error:
        code = ord(prompt[error.start])
        what = f"byte 0x{code - 0xDC00:02x}" if 0xDC80 <= code <= 0xDCFF else f"character U+{code:04X}"
        raise ValueError(
            f"{where} is not UTF-8 text ({what} at position {error.start}); set the terminal to UTF-8 (e.g. "
            "LANG=C.UTF-8) or write the prompt in a UTF-8 file"
        ) from None
    return prompt


def sample(logits: Tensor, temperature: float, top_k: int | None, top_p: float, generator: torch.Generator) -> Tensor:
    """One token per row of ``logits`` ``(B, V)`` → ``(B,)``; ``temperature=0`` is greedy.

    The logits are shifted so that the largest is 0 before they are divided by ``temperature``, so every finite
    ``temperature > 0`` gives finite probabilities (one below float32's smallest normal number samples as at that
    number, 1.2e-38: greedy, except that tied likeliest tokens are drawn at random). ``top_k`` then keeps the k
    likeliest tokens, and ``top_p < 1`` the nucleus: the likeliest tokens up to the first whose cumulative
    probability reaches ``top_p`` (in this order, as Hugging Face's ``generate``).
    """
    if temperature == 0:
        return logits.argmax(-1)
    logits = logits.float()
    logits = (logits - logits.amax(-1, keepdim=True)) / max(temperature, torch.finfo(logits.dtype).tiny)
    if top_k is not None:
        kth = logits.topk(min(top_k, logits.shape[-1]), dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = logits.softmax(-1)
    if top_p < 1:
        sorted_probs, order = probs.sort(-1, descending=True)
        likelier = sorted_probs.cumsum(-1) - sorted_probs  # mass of the tokens before each one
        probs = probs.scatter(-1, order, sorted_probs.masked_fill(likelier >= top_p, 0))
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


@torch.no_grad()
def generate_tokens(
    model: LanguageModel,
    prompt: Tensor,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float = 1.0,
    seed: int = 0,
    stop_token: int | None = None,
    vocab_limit: int | None = None,
) -> Tensor:
    """``prompt`` ``(B, T)`` token ids, ``T ≥ 1`` → ``(B, N)`` sampled continuations, ``N = max_new_tokens``, or
    fewer once every row has sampled ``stop_token`` (rows that sampled it earlier go on after it).

    The prompt goes through one parallel forward; each new token then costs one ``step`` (constant
    memory per token for the RNN and SSM mixers). Sampling draws from a generator seeded with ``seed``, among
    the ids below ``vocab_limit`` (a tokenizer's size, when the model's vocabulary is padded beyond it).
    """
    check_sampling(max_new_tokens, temperature, top_k, top_p, seed)
    if prompt.dim() != 2 or prompt.shape[1] < 1:
        raise ValueError(f"generate: prompt must be (batch, time) with time >= 1, got {tuple(prompt.shape)}")
    was_training = model.training
    model.eval()
    generator = torch.Generator(prompt.device).manual_seed(seed)
    logits, state = model(prompt, return_state=True)
    logits = logits[:, -1]
    new: list[Tensor] = []
    stopped = torch.zeros(prompt.shape[0], dtype=torch.bool, device=prompt.device)
    for i in range(max_new_tokens):
        new.append(sample(logits[:, :vocab_limit], temperature, top_k, top_p, generator))
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
    top_p: float = 1.0,
    seed: int = 0,
    stop_at_eos: bool = True,
) -> str:
    """The text of ``max_new_tokens`` tokens sampled after ``prompt`` (the prompt itself not included), ended
    before the first end-of-text token if ``stop_at_eos`` (the model would go on with a new document).

    An empty prompt starts from the tokenizer's end-of-text token. Only the tokenizer's ids are sampled, also
    from a model whose ``vocab_size`` is padded beyond it.
    """
    if not isinstance(model, LanguageModel):
        model.configure_model()  # built by a Trainer, or here for a CausalLM used outside one
    lm = model if isinstance(model, LanguageModel) else model.model
    ids = tokenizer.encode(check_prompt(prompt)) or ([] if tokenizer.eos_id is None else [tokenizer.eos_id])
    if not ids:
        raise ValueError("generate: empty prompt and the tokenizer has no end-of-text token to start from")
    prompt_ids = torch.tensor([ids], device=lm.embedding.weight.device)
    stop = tokenizer.eos_id if stop_at_eos else None
    new = generate_tokens(
        lm, prompt_ids, max_new_tokens, temperature, top_k, top_p, seed, stop, vocab_limit=tokenizer.vocab_size
    )[0].tolist()
    return tokenizer.decode(new[: new.index(stop)] if stop in new else new)


def load_checkpoint(path: str, tokenizer: str | None = None) -> tuple[CausalLM, Tokenizer]:
    """The :class:`CausalLM` of a Lightning checkpoint, on CPU, and its tokenizer: ``tokenizer`` if given, else
    :func:`checkpoint_tokenizer`.

    Checkpoints of other model classes, tokenizers with more tokens than the model's ``vocab_size``, and a tokenizer
    other than the one the checkpoint records (:func:`check_trained_tokenizer`) are refused with a ``ValueError``
    before the model is built.
    """
    from .module import CausalLM  # not at the top: module.py imports this file

    checkpoint = read_checkpoint_file(path, "--ckpt", WRITTEN_BY)
    hparams = checkpoint.get("hyper_parameters", {})
    trained = hparams.get("_class_path")
    if trained is not None and not is_imported_subclass(trained, CausalLM):
        raise ValueError(f"{path} is a {trained} checkpoint, not a CausalLM one ({WRITTEN_BY})")
    if "vocab_size" not in hparams:
        raise ValueError(f"{path} holds no CausalLM hyperparameters: not a CausalLM checkpoint ({WRITTEN_BY})")
    require_recorded_cell(hparams, f"--ckpt {path}")
    loaded = load_tokenizer(tokenizer) if tokenizer else checkpoint_tokenizer(checkpoint, path)
    fix = "pass that one as --tokenizer, or leave --tokenizer out (the checkpoint's own)"
    check_vocab_size(loaded, hparams["vocab_size"], f"{path} was trained with another one: {fix}")
    check_trained_tokenizer(checkpoint, loaded, f"--ckpt {path}", fix)
    return CausalLM.load_from_checkpoint(path, map_location="cpu"), loaded


def tokenizer_record(tokenizer: Tokenizer) -> dict[str, str | None]:
    """What a checkpoint records of the tokenizer it was trained with: its ``name`` and, for BPE, its JSON (so that
    the checkpoint decodes text wherever it is used)."""
    bpe_json = tokenizer.tokenizer.to_str() if isinstance(tokenizer, BPETokenizer) else None
    return {"name": tokenizer.name, "json": bpe_json}


def check_trained_tokenizer(checkpoint: dict[str, Any], tokenizer: Tokenizer, where: str, fix: str) -> None:
    """Raise ``ValueError`` naming both tokenizers, ending in ``fix``, if ``checkpoint`` (the one at ``where``) records
    a tokenizer other than ``tokenizer``. Checkpoints written before tokenizers were recorded pass."""
    trained = checkpoint.get(TOKENIZER_KEY, {}).get("name")
    if trained is not None and trained != tokenizer.name:
        raise ValueError(f"{where} was trained with tokenizer {trained!r}, not {tokenizer.name!r}: {fix}")


def checkpoint_tokenizer(checkpoint: dict[str, Any], path: str) -> Tokenizer:
    """The tokenizer a checkpoint was trained with: the BPE tokenizer it holds, else (byte tokenizers, and checkpoints
    written before tokenizers were recorded) its data module's ``tokenizer`` argument, ``"byte"`` if none."""
    stored = checkpoint.get(TOKENIZER_KEY, {}).get("json")
    if stored is not None:
        return BPETokenizer(import_tokenizers().Tokenizer.from_str(stored))
    spec = checkpoint.get("datamodule_hyper_parameters", {}).get("tokenizer", "byte")
    try:
        return load_tokenizer(spec)
    except FileNotFoundError as error:
        raise FileNotFoundError(
            f"{error}: the tokenizer file that {path} names, relative to the folder it was trained in; "
            "run from there or pass --tokenizer"
        ) from error


def is_imported_subclass(class_path: str, cls: type) -> bool:
    """Whether ``class_path`` (``"package.module.Class"``) names ``cls`` or a subclass, in a module already imported."""
    module, _, name = class_path.rpartition(".")
    found = getattr(sys.modules.get(module), name, None)
    return isinstance(found, type) and issubclass(found, cls)


def in_range(
    kind: type[int] | type[float], low: float, high: float = math.inf, low_open: bool = False
) -> Callable[[str], Any]:
    """An argparse ``type``: ``kind(text)``, refused outside ``[low, high]`` (``(low, high]`` if ``low_open``), and
    refused if NaN or infinite."""
    if high < math.inf:
        rule = f"in {'(' if low_open else '['}{low}, {high}]"
    else:
        rule = f"{'>' if low_open else '>='} {low}" + (" and finite" if kind is float else "")

    def parse(text: str) -> int | float:
        value = kind(text)
        if not ((low < value if low_open else low <= value) and value <= high and value != math.inf):
            raise argparse.ArgumentTypeError(f"must be {rule}, got {text}")
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
        allow_abbrev=False,  # a misspelt option must not pass for another one
        prog="pararnn-ts generate",
        description="Generate text from a CausalLM checkpoint.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--ckpt", required=True, type=existing_file, help="a checkpoint of `pararnn-ts fit -c experiments/lm/...`"
    )
    parser.add_argument("--prompt", default="", help="text to continue (empty: start a new document)")
    parser.add_argument("--max-new-tokens", type=in_range(int, 0), default=200, help="tokens to sample")
    parser.add_argument("--temperature", type=in_range(float, 0), default=0.8, help="0: greedy")
    parser.add_argument("--top-k", type=in_range(int, 1), default=None, help="sample among the k likeliest tokens")
    parser.add_argument(
        "--top-p",
        type=in_range(float, 0, 1, low_open=True),
        default=1.0,
        help="sample among the likeliest tokens whose probabilities add up to p (1: all)",
    )
    parser.add_argument("--seed", type=in_range(int, 0, MAX_SEED), default=0, help="seeds the sampling")
    parser.add_argument(
        "--tokenizer", default=None, help="'byte' or a BPE JSON file (None: the one the checkpoint holds or names)"
    )
    parser.add_argument(
        "--stop-at-eos",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="end the text before the first end-of-text token (the model would go on with a new document)",
    )
    opts = parser.parse_args(args)
    model, tokenizer = load_checkpoint(opts.ckpt, opts.tokenizer)
    sampling = (opts.temperature, opts.top_k, opts.top_p, opts.seed, opts.stop_at_eos)
    text = generate(model, tokenizer, opts.prompt, opts.max_new_tokens, *sampling)
    print(opts.prompt + text)


if __name__ == "__main__":
    main()
