"""Tokenisers for language modelling: raw UTF-8 bytes (the default) and byte-level BPE.

Both share one small interface (:class:`Tokenizer`): ``vocab_size``, ``eos_id``, ``name``,
``encode(str) -> list[int]`` and ``decode(list[int]) -> str``, with ``decode(encode(s)) == s``
for every string ``s``. ``name`` identifies the exact vocabulary, so shards written with one
tokeniser are never read with another.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol

#: the end-of-text token appended after every document
EOS = "<|endoftext|>"


class Tokenizer(Protocol):
    name: str
    vocab_size: int
    eos_id: int | None

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: Sequence[int]) -> str: ...


class ByteTokenizer:
    """Token ``i < 256`` is the byte ``i`` of the UTF-8 text; ids ``256, 257, ...`` are ``special_tokens``.

    ``encode`` never produces special tokens (text that spells ``<|endoftext|>`` stays bytes);
    ``decode`` writes them out and replaces byte runs that are not valid UTF-8 with U+FFFD.
    """

    def __init__(self, special_tokens: Sequence[str] = (EOS,)) -> None:
        self.special_tokens = tuple(special_tokens)
        self.vocab_size = 256 + len(self.special_tokens)
        self.eos_id = 256 + self.special_tokens.index(EOS) if EOS in self.special_tokens else None
        self.name = "byte" + "".join(f"+{token}" for token in self.special_tokens)

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids: Sequence[int]) -> str:
        parts: list[str] = []
        run = bytearray()
        for i in ids:
            if 0 <= i < 256:
                run.append(i)
            elif 256 <= i < self.vocab_size:
                parts.append(run.decode("utf-8", errors="replace"))
                run.clear()
                parts.append(self.special_tokens[i - 256])
            else:
                raise ValueError(f"token id {i} is outside the byte vocabulary [0, {self.vocab_size})")
        parts.append(run.decode("utf-8", errors="replace"))
        return "".join(parts)


def import_tokenizers() -> Any:
    """The ``tokenizers`` package, or an ``ImportError`` that says how to install it."""
    try:
        import tokenizers
    except ImportError as err:
        raise ImportError(
            "BPE tokenisers need the Hugging Face `tokenizers` package: pip install tokenizers "
            "(or pip install 'pararnn-ts[lm]'); the default tokenizer='byte' needs nothing"
        ) from err
    return tokenizers


class BPETokenizer:
    """Byte-level BPE from the ``tokenizers`` package: every string round-trips, no unknown tokens.

    As with :class:`ByteTokenizer`, ``encode`` never produces special tokens: text that spells
    ``<|endoftext|>`` is encoded as ordinary text (this sets ``encode_special_tokens`` on ``tokenizer``).
    Train locally with :meth:`train`, keep with :meth:`save`, reload with :meth:`from_file`.
    """

    def __init__(self, tokenizer: Any) -> None:
        tokenizer.encode_special_tokens = True  # the end-of-text token comes from its id, never from the text
        self.tokenizer = tokenizer
        self.vocab_size = tokenizer.get_vocab_size(with_added_tokens=True)
        self.eos_id = tokenizer.token_to_id(EOS)
        digest = hashlib.sha256(tokenizer.to_str().encode("utf-8")).hexdigest()[:12]
        self.name = f"bpe{self.vocab_size}-{digest}"

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int, special_tokens: Sequence[str] = (EOS,)) -> BPETokenizer:
        """Learn ``vocab_size`` tokens (256 bytes + specials + merges) from ``texts``, locally."""
        smallest = 256 + len(special_tokens) + 1
        if vocab_size < smallest:
            raise ValueError(
                f"vocab_size={vocab_size} leaves no room for merges: the 256 bytes and {len(special_tokens)} special "
                f"token(s) take {smallest - 1} ids. Pass vocab_size >= {smallest}, or use the byte tokenizer"
            )
        tk = import_tokenizers()
        tokenizer = tk.Tokenizer(tk.models.BPE())
        tokenizer.pre_tokenizer = tk.pre_tokenizers.ByteLevel(add_prefix_space=False)
        tokenizer.decoder = tk.decoders.ByteLevel()
        trainer = tk.trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=list(special_tokens),
            initial_alphabet=tk.pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        tokenizer.train_from_iterator(texts, trainer=trainer)
        return cls(tokenizer)

    @classmethod
    def from_file(cls, path: str | Path) -> BPETokenizer:
        """Load a tokeniser saved by :meth:`save` (any ``tokenizers`` JSON file)."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(
                f"no BPE tokenizer file at {path}: the tokenizer is 'byte' or the path of a tokenizers JSON file (make "
                "one with datasets/text_files/prepare.py --tokenizer bpe, or BPETokenizer.train)"
            )
        return cls(import_tokenizers().Tokenizer.from_file(str(path)))

    def save(self, path: str | Path) -> None:
        self.tokenizer.save(str(path))

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=False)


def load_tokenizer(spec: str | Path) -> Tokenizer:
    """``"byte"`` for :class:`ByteTokenizer`, else the path of a BPE tokenizer JSON file."""
    return ByteTokenizer() if str(spec) == "byte" else BPETokenizer.from_file(spec)


def check_vocab_size(tokenizer: Tokenizer, vocab_size: int, fix: str) -> None:
    """Raise ``ValueError`` (ending in ``fix``) if ``tokenizer`` makes ids that a model's ``vocab_size`` embedding
    rows cannot hold; a smaller tokenizer is fine (rows padded to a round number, as in the paper's configs)."""
    if tokenizer.vocab_size > vocab_size:
        raise ValueError(
            f"tokenizer {tokenizer.name!r} has {tokenizer.vocab_size} tokens, more than the model's "
            f"vocab_size={vocab_size}: {fix}"
        )
