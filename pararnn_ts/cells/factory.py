"""The ``cell`` argument of the models: a built-in cell's name, or a user's cell.

The forecaster, the LM's ParaRNN mixer and the world model build one cell per layer, so their ``cell`` is a
*factory*: ``"gru"`` (:class:`~pararnn_ts.cells.gru.ParaGRU`), ``"lstm"`` (:class:`~pararnn_ts.cells.lstm.ParaLSTM`),
or any callable ``cell(input_size, hidden_size) → ParaCell``, of which a :class:`~pararnn_ts.core.cell.ParaCell`
subclass is one (``cell=MyCell``; ``functools.partial(MyCell, mode="parallel")`` adds the cell's own arguments). In a
Lightning CLI config the same is ``cell: {class_path: my_cells.MyCell, init_args: {mode: parallel}}`` (jsonargparse
makes it a partial; ``input_size`` and ``hidden_size`` are the layer's, so ``init_args`` may not set them).

A model's arguments that configure the built-in cells (``num_heads``, ``max_norm``, ``mode`` and the other solver
settings) apply to the names only: a user cell takes its own through its arguments, so with one they must keep their
defaults (:func:`refuse_builtin_settings`). The cell built must read ``input_size`` features and give ``hidden_size``
per step (its ``output_size``; :func:`build_cell` checks both).

Checkpoints hold the cell as a config names it (:func:`cell_record`: ``{"class_path", "init_args"}``, plain values
that YAML and ``torch.load(weights_only=True)`` read), which :func:`resolve_cell` turns back into the factory.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import warnings
from collections.abc import Callable, Mapping, MutableMapping
from typing import Any, Literal

from torch import nn

from ..core import ParaCell
from .gru import ParaGRU
from .lstm import ParaLSTM

#: the built-in cells by name
BUILTIN_CELLS: dict[str, type[ParaCell]] = {"gru": ParaGRU, "lstm": ParaLSTM}
CellName = Literal["gru", "lstm"]
#: a user cell: ``cell(input_size, hidden_size)`` builds one layer's cell (a ParaCell subclass is one)
CellFactory = Callable[[int, int], ParaCell]
#: what a model's ``cell`` argument takes
CellSpec = CellName | CellFactory
#: the solver settings of every cell (``mode``, ``tol``, ...) with their defaults, from ``ParaCell.__init__``
SOLVER_DEFAULTS: dict[str, Any] = {
    name: parameter.default
    for name, parameter in inspect.signature(ParaCell.__init__).parameters.items()
    if parameter.kind is parameter.KEYWORD_ONLY
}
_UNSET = object()
EXAMPLE = "a ParaCell subclass such as my_cells.MyCell, or in a config cell: {class_path: my_cells.MyCell}"


class CellWidthError(ValueError):
    """A user cell whose output is not as wide as its layer (raised by :func:`build_cell`)."""


def resolve_cell(cell: Any, owner: str, argument: str = "cell") -> str | CellFactory:
    """``cell`` checked: a built-in name as it is; a callable as ``functools.partial(cls, **init_args)`` where it is a
    class or a partial of one (jsonargparse's too), else as it is; a checkpoint's record ``{"class_path",
    "init_args"}`` as the partial it names. A ``ValueError`` or ``TypeError`` naming ``owner``'s ``argument`` (as the
    user wrote it: ``cell``, ``model_kwargs['cell']``) otherwise."""
    if isinstance(cell, str):
        if cell not in BUILTIN_CELLS:
            raise ValueError(
                f"{owner}: {argument}={cell!r} is not one of {tuple(BUILTIN_CELLS)}, nor a callable (input_size, "
                f"hidden_size) → ParaCell ({EXAMPLE})"
            )
        return cell
    if isinstance(cell, Mapping):
        return _from_record(cell, owner, argument)
    if isinstance(cell, nn.Module):
        raise TypeError(
            f"{owner}: {argument} is a {type(cell).__name__} instance; each layer builds its own cell, so pass its "
            f"class ({argument}={type(cell).__name__}) or a factory (functools.partial({type(cell).__name__}, "
            "mode=...)): it is called as cell(input_size, hidden_size)"
        )
    if not callable(cell):
        raise TypeError(
            f"{owner}: {argument}={cell!r} is neither one of {tuple(BUILTIN_CELLS)} nor a callable (input_size, "
            f"hidden_size) → ParaCell ({EXAMPLE})"
        )
    found = _class_and_arguments(cell)
    if found is None:
        return cell
    cls, arguments = found
    return functools.partial(cls, **arguments) if arguments else cls


def build_cell(
    cell: str | CellFactory,
    input_size: int,
    hidden_size: int,
    owner: str,
    size_name: str = "hidden_size",
    **builtin_kwargs: Any,
) -> ParaCell:
    """One layer's cell: ``BUILTIN_CELLS[cell](input_size, hidden_size, **builtin_kwargs)`` for a name, else
    ``cell(input_size, hidden_size)`` (``builtin_kwargs`` unused: see :func:`refuse_builtin_settings`), checked to be a
    ParaCell that reads ``input_size`` features and gives ``hidden_size`` (the owner's argument ``size_name``)."""
    if isinstance(cell, str):
        return BUILTIN_CELLS[cell](input_size, hidden_size, **builtin_kwargs)
    built = cell(input_size, hidden_size)
    name = describe_cell(cell)
    if not isinstance(built, ParaCell):
        raise TypeError(
            f"{owner}: cell={name} returned a {type(built).__name__}, not a ParaCell: cell(input_size, hidden_size) "
            "must build one layer's cell (a subclass of pararnn_ts.core.cell.ParaCell)"
        )
    if built.input_size is not None and built.input_size != input_size:
        raise ValueError(
            f"{owner}: cell={name} built a {type(built).__name__} with input_size={built.input_size}, but the layer "
            f"feeds it {input_size} features: the cell takes the input_size it is called with (cell(input_size, "
            "hidden_size)); do not fix it in the cell's own arguments"
        )
    if built.output_size != hidden_size:
        raise CellWidthError(
            f"{owner}: cell={name} gives {built.output_size} output features per step (state_shape "
            f"{tuple(built.state_shape)}), but its layer is {size_name}={hidden_size} wide: build the cell with the "
            "hidden_size it is called with as its output width (a cell whose state is wider overrides output() and "
            "output_size, as ParaLSTM does, whose state is (c, h) and whose output is h)"
        )
    return built


def refuse_builtin_settings(owner: str, cell: Any, **settings: tuple[Any, Any]) -> None:
    """With a user cell (not a name), a ``ValueError`` naming each ``name=(value, default)`` whose value is not its
    default: those arguments configure the built-in cells only, a user cell takes its own."""
    if isinstance(cell, str):
        return
    changed = {name: (value, default) for name, (value, default) in settings.items() if value != default}
    if changed:
        listed = ", ".join(f"{name}={value!r}" for name, (value, _) in changed.items())
        defaults = ", ".join(f"{name}={'(not set)' if d is _UNSET else repr(d)}" for name, (_, d) in changed.items())
        raise ValueError(
            f"{owner}: {listed} configure{'s' if len(changed) == 1 else ''} the built-in cells "
            f"{tuple(BUILTIN_CELLS)} only, and cell={describe_cell(cell)} is a user cell, which takes such settings "
            "through its own arguments (in a config its init_args, in Python functools.partial(MyCell, mode=...)): "
            f"leave {'it' if len(changed) == 1 else 'them'} at the default ({defaults})"
        )


def solver_settings(solver_kwargs: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    """``solver_kwargs`` as ``name=(value, default)`` for :func:`refuse_builtin_settings` (ParaCell's defaults; a
    keyword ParaCell does not take counts as set)."""
    return {name: (value, SOLVER_DEFAULTS.get(name, _UNSET)) for name, value in solver_kwargs.items()}


def describe_cell(cell: Any) -> str:
    """``cell`` for messages: its name, or its class path with the arguments that differ from the class's defaults,
    for a class, a partial or a :func:`cell_record`."""
    if isinstance(cell, str):
        return repr(cell)
    record = cell if isinstance(cell, Mapping) and "class_path" in cell else cell_record(cell)
    if record is None:
        return repr(cell)
    try:  # the arguments that differ from the class's defaults (jsonargparse's partials list them all)
        parameters = inspect.signature(_import(record["class_path"])).parameters
    except (TypeError, ValueError, ImportError, AttributeError):
        parameters = {}
    given = {
        key: value
        for key, value in record.get("init_args", {}).items()
        if (parameters[key].default if key in parameters else SOLVER_DEFAULTS.get(key, _UNSET)) != value
    }
    arguments = ", ".join(f"{key}={value!r}" for key, value in given.items())
    return f"{record['class_path']}({arguments})" if arguments else record["class_path"]


def cell_record(cell: Any) -> dict[str, Any] | None:
    """``cell`` as a config names it: ``{"class_path": ..., "init_args": {...}}`` (``init_args`` only when there are
    some) for a class importable by that path or a partial of one with keyword arguments of plain values; ``None``
    for anything else (a lambda, a function, a class defined inside a function)."""
    found = _class_and_arguments(cell)
    if found is None:
        return None
    cls, arguments = found
    path = f"{cls.__module__}.{cls.__qualname__}"
    try:
        importable = _import(path) is cls
    except (ImportError, AttributeError):
        importable = False
    if not importable or not all(_is_plain(value) for value in arguments.values()):
        return None
    return {"class_path": path, "init_args": _plain(arguments)} if arguments else {"class_path": path}


def portable_cell(cell: Any, owner: str, argument: str = "cell") -> str | dict[str, Any]:
    """``cell`` (checked by :func:`resolve_cell`) in plain values: a name as it is, a user cell as its
    :func:`cell_record`. A ``ValueError`` naming ``owner``'s ``argument`` and the fix for a user cell that has no
    record (a lambda, a function, a class defined inside a function): checkpoints could hold it only pickled, which
    ``load_from_checkpoint`` (``torch.load(weights_only=True)``) refuses."""
    resolved = resolve_cell(cell, owner, argument)
    if isinstance(resolved, str):
        return resolved
    record = cell_record(resolved)
    if record is None:
        raise ValueError(
            f"{owner}: {argument}={cell!r} is not a class importable by its name, nor a functools.partial of one "
            "with plain keyword arguments, so checkpoints (read by load_from_checkpoint with weights_only=True) and "
            "GluonTS's serialization cannot record it as {'class_path', 'init_args'}: define the cell class at the top "
            "level of an importable module and pass it (or functools.partial(MyCell, gain=...))"
        )
    return record


def record_cell(hparams: MutableMapping[str, Any], owner: str, key: str = "cell") -> None:
    """Replace a user cell in saved ``hparams[key]`` by its :func:`cell_record`, so that checkpoints and
    ``hparams.yaml`` hold plain values and ``load_from_checkpoint`` rebuilds it; a name, or the CLI's record, stays.
    A cell that cannot be recorded is saved as ``None`` with a warning: reload such a checkpoint with
    ``load_from_checkpoint(path, cell=...)``."""
    cell = hparams.get(key)
    if isinstance(cell, (str, Mapping)) or cell is None:
        return
    record = cell_record(cell)
    if record is None:
        warnings.warn(
            f"{owner}: cell={cell!r} is not an importable class (or a functools.partial of one with plain keyword "
            "arguments), so checkpoints cannot record it: they hold cell=None, and load_from_checkpoint(path, "
            "cell=...) needs it again. Define the cell class at the top level of a module to have it recorded",
            UserWarning,
            stacklevel=3,
        )
    hparams[key] = record


def require_recorded_cell(hparams: Mapping[str, Any], where: str, key: str = "cell") -> None:
    """Raise ``ImportError`` naming ``where`` (``--ckpt run/last.ckpt``) and the fix if the cell that a checkpoint's
    ``hparams[key]`` records (:func:`cell_record`) cannot be imported here, before the model is built (jsonargparse
    would bury the reason in its own message). Built-in cells and ``None`` pass."""
    record = hparams.get(key)
    if not (isinstance(record, Mapping) and isinstance(record.get("class_path"), str)):
        return
    try:
        _import(record["class_path"])
    except (ImportError, AttributeError, ValueError) as error:
        raise ImportError(
            f"{where} was trained with the cell {record['class_path']!r}, which cannot be imported here ({error}); "
            "make its module importable: installed, or on PYTHONPATH (e.g. PYTHONPATH=<the folder it was trained "
            "from>)"
        ) from error


def _class_and_arguments(cell: Any) -> tuple[type, dict[str, Any]] | None:
    """The class and keyword arguments of a class, or of a ``functools.partial`` of a class (also jsonargparse's,
    which wraps the class in its instantiator), with no positional arguments; ``None`` for anything else."""
    if isinstance(cell, type):
        return cell, {}
    if not isinstance(cell, functools.partial):
        return None
    args = cell.args
    if str(getattr(cell.func, "__module__", "")).startswith("jsonargparse") and args and isinstance(args[-1], type):
        if all(callable(arg) for arg in args[:-1]):  # partial(call_without_instantiate_context, instantiator, cls)
            return args[-1], dict(cell.keywords)
        return None
    if isinstance(cell.func, type) and not args:
        return cell.func, dict(cell.keywords)
    return None


def _from_record(record: Mapping[str, Any], owner: str, argument: str) -> CellFactory:
    """The factory a :func:`cell_record` names."""
    extra = set(record) - {"class_path", "init_args"}
    if "class_path" not in record or extra:
        raise ValueError(
            f"{owner}: {argument}={dict(record)!r} is not a cell's record: give {{'class_path': 'my_cells.MyCell', "
            "'init_args': {...}}} (init_args optional), a built-in name or the cell class itself"
        )
    path, arguments = record["class_path"], dict(record.get("init_args") or {})
    try:
        cls = _import(path)
    except (ImportError, AttributeError, ValueError) as error:
        raise ImportError(
            f"{owner}: {argument} class_path {path!r} cannot be imported ({error}); make its module importable "
            "(installed, or on PYTHONPATH)"
        ) from error
    if not callable(cls):
        raise TypeError(f"{owner}: {argument} class_path {path!r} names a {type(cls).__name__}, not a cell class")
    return functools.partial(cls, **arguments) if arguments else cls


def _import(path: str) -> Any:
    """The object at dotted ``path`` (a module, then attributes: nested classes too)."""
    parts = path.split(".")
    for split in range(len(parts) - 1, 0, -1):
        try:
            found = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        for name in parts[split:]:
            found = getattr(found, name)
        return found
    raise ImportError(f"no module in {path!r}")


def _plain(value: Any) -> Any:
    """A plain value with its tuples as lists (YAML's safe dumper has no tuples)."""
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    return value


def _is_plain(value: Any) -> bool:
    """Whether ``value`` is ``None``, a str, number or bool, or a list, tuple or str-keyed dict of such values."""
    if isinstance(value, (list, tuple)):
        return all(_is_plain(item) for item in value)
    if isinstance(value, dict):
        return all(isinstance(key, str) and _is_plain(item) for key, item in value.items())
    return value is None or isinstance(value, (str, int, float, bool))
