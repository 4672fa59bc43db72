"""The ``pararnn-ts`` CLI's argument parser: Lightning's, with a "did you mean" for a misspelt option.

An option the parser does not know (``--trainer.max_step``, ``--model.init_args.hiden_size`` on the command line or
in a config file) is refused by jsonargparse with no hint; this parser adds the closest known ones to the error.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import re
from typing import Any, NoReturn

from lightning.pytorch.cli import LightningArgumentParser

# jsonargparse's messages for an unknown option: on the command line, in a config file, among a class's arguments
_UNKNOWN = (
    re.compile(r"unrecognized arguments: --([\w.]+)"),
    re.compile(r"does not accept option '([\w.]+)'"),
)
_CLASS_OPTION = re.compile(r"Option '(\w+)' is not accepted")  # after the keys and class paths that lead to it
_CLASS_KEY = re.compile(r"Parser key \"([\w.]+)\"|class_path '([\w.]+)'")


class SuggestingArgumentParser(LightningArgumentParser):
    """A ``LightningArgumentParser`` whose errors for an unknown option name the closest options it knows."""

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        if self.exit_on_error:  # the parser that reports, not one of a class's arguments that it reads
            message += did_you_mean(message, option_keys(getattr(ex, "subcommand_parser", None) or self))
        super().error(message, ex)


def did_you_mean(message: str, keys: list[str]) -> str:
    """The hint to add to ``message``, an error of the parser whose options are ``keys``: ``"; did you mean --a?"``
    (on a line of its own after a message of several), or ``""`` if it names no unknown option or none is close."""
    found = _CLASS_OPTION.search(message)
    if found:  # an argument of a class: the key path is the keys of the classes that lead to it
        path = _CLASS_KEY.findall(message[: found.start()])
        keys, classes = [key for key, _ in path if key], [cls for _, cls in path if cls]
        if not classes:
            return ""
        group = ".init_args.".join(keys) + ".init_args."
        unknown, known = group + found.group(1), [group + name for name in init_arguments(classes[-1])]
    else:
        found = next(filter(None, (pattern.search(message) for pattern in _UNKNOWN)), None)
        if found is None:
            return ""
        unknown, known = found.group(1), keys
    close = closest(unknown, known)
    if not close:
        return ""
    return ("\n" if "\n" in message else "; ") + f"did you mean {' or '.join('--' + name for name in close)}?"


def closest(unknown: str, known: list[str]) -> list[str]:
    """The (at most two) keys of ``known`` in the same group as the dotted key ``unknown`` whose last part is close
    to its last part: ``trainer.max_step`` → ``trainer.max_steps``."""
    group, _, name = unknown.rpartition(".")
    siblings = {key.rpartition(".")[2]: key for key in known if key.rpartition(".")[0] == group}
    return [siblings[match] for match in difflib.get_close_matches(name, list(siblings), n=2, cutoff=0.8)]


def option_keys(parser: Any) -> list[str]:
    """The dotted keys of ``parser``'s options (``trainer.max_steps``, ``data``, ...)."""
    return [action.dest for action in parser._actions if action.dest and action.dest != "help"]


def init_arguments(class_path: str) -> list[str]:
    """The names of the arguments that ``class_path``'s constructor takes, its bases' too where it passes
    ``**kwargs`` on; ``[]`` if it cannot be imported."""
    module, _, name = class_path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        return []
    names: list[str] = []
    for klass in cls.__mro__:
        if "__init__" not in vars(klass):
            continue
        parameters = inspect.signature(klass.__init__).parameters.values()
        names += [p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
        if not any(p.kind == p.VAR_KEYWORD for p in parameters):
            break
    return [name for name in dict.fromkeys(names) if name != "self"]
