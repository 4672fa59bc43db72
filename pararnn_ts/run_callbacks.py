"""Callbacks the ``pararnn-ts`` CLI adds to every fit so that a run stops, resumes and ends cleanly: Ctrl-C saves a
checkpoint that resumes exactly (:class:`SaveOnInterrupt`), ``last.ckpt`` holds the fit's last steps
(:class:`SaveLastAtEnd`), a fit resumed after a stop logs at the steps of the uninterrupted one
(:class:`CountStepBeforeStopValidation`), and gloo process groups end with their process
(:class:`EndProcessGroupAtExit`).

Each works with a ``Trainer`` built in Python too; they set Lightning's loop progress as its own checkpoints do.
"""

from __future__ import annotations

import atexit
import math
import os
import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Any

import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.trainer.states import TrainerFn

from .callbacks import ResumeRandomState
from .loaders import ResumablePasses

#: the checkpoint a fit stopped by Ctrl-C leaves in its checkpoint folder (:class:`SaveOnInterrupt`)
INTERRUPTED_CHECKPOINT = "interrupted.ckpt"


class SaveOnInterrupt(Callback):
    """On Ctrl-C during ``fit``, save the run to ``interrupted.ckpt`` in its checkpoint folder, so that
    ``--ckpt_path`` resumes it; without it only the last checkpoint written before survives.

    The run is saved as it stood when its last finished training step ended (:func:`rewind_to_finished_step`), or
    with the validation under way not yet run (:func:`restart_validation`): a fit resumed from there trains on the
    batches, and validates at the steps, that the uninterrupted fit would have. A Ctrl-C from the moment a step
    updates the weights until the next batch or validation starts is held until then (:class:`HeldInterrupt`), so
    that no update is saved half done; a second one stops at once.
    """

    def __init__(self) -> None:
        self.hold: HeldInterrupt | None = None
        self.trained = False  # the fit loop has ended: nothing to rewind

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.trained = False

    def on_before_optimizer_step(self, trainer: Trainer, pl_module: LightningModule, optimizer: Any) -> None:
        if self.hold is None and HeldInterrupt.can_hold():
            self.hold = HeldInterrupt(trainer.is_global_zero)

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        self.stop_if_held()

    def on_validation_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.stop_if_held()

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.trained = True
        self.stop_if_held()

    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self.release()

    def release(self) -> bool:
        """End the hold, if any; whether it held a Ctrl-C."""
        hold, self.hold = self.hold, None
        return hold is not None and hold.release()

    def stop_if_held(self) -> None:
        """End the hold, raising the Ctrl-C it held (``KeyboardInterrupt``), if any."""
        if self.release():
            raise KeyboardInterrupt

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        self.release()
        checkpoint = trainer.checkpoint_callback
        if not (
            isinstance(exception, KeyboardInterrupt)
            and trainer.state.fn == TrainerFn.FITTING
            and not (trainer.fast_dev_run or trainer.sanity_checking)
            and checkpoint is not None
            and checkpoint.dirpath is not None
        ):
            return
        if trainer.validating:
            restart_validation(trainer)
        elif not (self.trained or rewind_to_finished_step(trainer)):
            if trainer.is_global_zero:
                print("\nstopped before a training step finished: nothing to save", file=sys.stderr)
            return
        path = Path(checkpoint.dirpath) / INTERRUPTED_CHECKPOINT
        trainer.save_checkpoint(path, weights_only=False)  # said, not defaulted: Lightning logs the default
        if trainer.is_global_zero:
            print(f"\nsaved the interrupted run to {path}; resume it with --ckpt_path {path}", file=sys.stderr)


class HeldInterrupt:
    """Ctrl-C (SIGINT) held off: the first one is noted (:meth:`release` says so) instead of raising
    ``KeyboardInterrupt``, a second one raises it at once. Only where :meth:`can_hold`."""

    def __init__(self, tell: bool = True) -> None:
        self.pending, self.tell = False, tell
        signal.signal(signal.SIGINT, self.note)

    @staticmethod
    def can_hold() -> bool:
        """Whether a Ctrl-C raises ``KeyboardInterrupt`` here: Python's own handler, in the main thread (not where
        SIGINT is ignored, as in a background job, or handled otherwise)."""
        main_thread = threading.current_thread() is threading.main_thread()
        return main_thread and signal.getsignal(signal.SIGINT) is signal.default_int_handler

    def note(self, signum: int, frame: FrameType | None) -> None:
        if self.pending:
            self.release()
            raise KeyboardInterrupt
        self.pending = True
        if self.tell:  # straight to the file: a handler that prints may interrupt a print (a progress bar's)
            os.write(2, b"\nCtrl-C: stopping once this step is done (Ctrl-C again stops at once)\n")

    def release(self) -> bool:
        """Give Ctrl-C back to Python's handler; whether one came meanwhile."""
        signal.signal(signal.SIGINT, signal.default_int_handler)
        return self.pending


def rewind_to_finished_step(trainer: Trainer) -> bool:
    """Set the fit's loops and its resumable training loaders back to the end of its last finished optimizer step
    (its last batch's ``on_train_batch_end``, where Lightning writes step checkpoints and resumes them exactly), after
    the validation that followed it. Returns ``False`` if no step has finished.

    A Ctrl-C lands mid-batch, where Lightning counts the unfinished batch as started (a fit resumed from there
    trains on it again, and validates one batch early) and the loader counts it as served (and skips it). With
    ``accumulate_grad_batches > 1`` it may land within a step's window of batches, whose gradients a checkpoint
    does not hold: the fit goes back to the window's start (and the random state with it, :class:`ResumeRandomState`).
    """
    fit, loop = trainer.fit_loop, trainer.fit_loop.epoch_loop
    progress = loop.batch_progress
    served = progress.current.processed  # this epoch's batches whose training step finished
    advanced = progress.current.completed == served  # and what follows a batch's end (validation, step count)
    stepped = served if served >= trainer.num_training_batches else served - served % trainer.accumulate_grad_batches
    finished, epoch = stepped, trainer.current_epoch
    if finished == 0:  # before the first step of an epoch: back to the end of the last one of the epoch before
        finished, epoch = trainer.num_training_batches, epoch - 1
    if epoch < 0 or not math.isfinite(finished):
        return False
    for loader in resumable_training_loaders(trainer):
        loader.rewind(stepped)
    ended_batch(progress.current, int(finished))
    ended_batch(progress.total, progress.total.processed - (served - stepped))
    progress.is_last_batch = finished >= trainer.num_training_batches
    for tracker in (fit.epoch_progress.current, fit.epoch_progress.total):
        under_way(tracker, epoch)
    automatic = loop.automatic_optimization.optim_progress.optimizer.step
    for steps in (automatic, loop.manual_optimization.optim_step_progress):  # the unfinished batch's step
        steps.current.ready, steps.total.ready = steps.current.completed, steps.total.completed
    if (advanced or stepped < served) and not loop._should_accumulate():
        loop._batches_that_stepped -= 1  # Lightning counts it again when it resumes after a batch's end
    if stepped < served:
        for callback in trainer.callbacks:
            if isinstance(callback, ResumeRandomState):
                callback.rewind_to_window()
    return True


def restart_validation(trainer: Trainer) -> None:
    """Set the fit's validation under way back to its start: a fit resumed from there runs it whole (Lightning would
    run the rest of it, on its first batches, and without the metrics of the part that ran)."""
    progress = trainer.fit_loop.epoch_loop.val_loop.batch_progress
    under_way(progress.total, progress.total.completed - progress.current.completed)
    under_way(progress.current, 0)
    progress.is_last_batch = False


def ended_batch(tracker: Any, batches: int) -> None:
    """Set a Lightning progress ``tracker`` to where ``batches`` batches are at their ``on_train_batch_end``: the last
    one processed, not yet completed."""
    tracker.ready = tracker.started = tracker.processed = batches
    tracker.completed = batches - 1


def under_way(tracker: Any, done: int) -> None:
    """Set a Lightning progress ``tracker`` to ``done`` events (epochs, batches) done and the next one started."""
    tracker.ready = tracker.started = done + 1
    tracker.processed = tracker.completed = done


def resumable_training_loaders(trainer: Trainer) -> list[ResumablePasses]:
    """The fit's training loaders that save their place in checkpoints (:class:`ResumablePasses`)."""
    combined = trainer.fit_loop._combined_loader  # whose loaders' state_dict Lightning saves
    return [] if combined is None else [loader for loader in combined.flattened if isinstance(loader, ResumablePasses)]


class SaveLastAtEnd(Callback):
    """When a fit ends (``max_steps``, ``max_epochs``, ``max_time``, ``trainer.should_stop``) after steps that no
    checkpoint holds, bring the ``last.ckpt`` of each ``ModelCheckpoint`` with ``save_last: true`` up to date:
    Lightning writes it with the checkpoints it saves after validations only, so ``--ckpt_path last`` would resume,
    and ``test`` or ``predict`` score, weights from before the fit's last steps.

    It is saved at the last epoch's end, as Lightning's epoch-end checkpoints are. A fit that ends within an epoch
    is saved there as the epoch under way, as if in a validation after its last step (every checkpoint taken at that
    epoch's end is): Lightning would count the epoch as finished, and a fit resumed from there would start the next
    one, skipping the rest of this one."""

    def __init__(self) -> None:
        self.saved_step: int | None = None  # the global step this callback last saved
        self.cut_short = False  # in the end-of-epoch hooks of an epoch that the fit's end cut short

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        progress = trainer.fit_loop.epoch_loop.batch_progress  # an iterable's epoch of unknown length ends at its end
        within = not progress.is_last_batch and progress.current.completed < trainer.num_training_batches
        self.cut_short = within and after_a_step(trainer)
        if ends_fit(trainer) and self.saved_step != trainer.global_step:
            self.save(trainer, keep_later_saves=True)

    def on_save_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]) -> None:
        if self.cut_short:
            fit = checkpoint["loops"]["fit_loop"]
            for tracker in fit["epoch_progress"].values():  # the epoch under way
                tracker["processed"] = tracker["completed"]
            if validates_there_on_resuming(trainer):  # Lightning counts the last step again
                fit["epoch_loop.state_dict"]["_batches_that_stepped"] -= 1

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.cut_short = False
        if self.saved_step != trainer.global_step:
            self.save(trainer)

    def save(self, trainer: Trainer, keep_later_saves: bool = False) -> None:
        """Write the ``last.ckpt`` of each ``ModelCheckpoint`` with ``save_last: true`` that has not saved this
        step. ``keep_later_saves``: it may still save this step's checkpoints (at this epoch's end)."""
        for callback in trainer.checkpoint_callbacks:
            # Lightning's own test of whether the fit's last step was saved, and its own way to write last.ckpt
            if isinstance(callback, ModelCheckpoint) and callback.save_last is True:
                if not callback._should_skip_saving_checkpoint(trainer):
                    saved_before = callback._last_global_step_saved
                    callback._save_last_checkpoint(trainer, callback._monitor_candidates(trainer))
                    if keep_later_saves:  # else it would skip them as saved already
                        callback._last_global_step_saved = saved_before
        self.saved_step = trainer.global_step


def ends_fit(trainer: Trainer) -> bool:
    """Whether the fit ends at the end of the epoch whose end-of-epoch hooks run (it has been counted processed)."""
    fit = trainer.fit_loop
    steps = 0 <= trainer.max_steps <= trainer.global_step
    epochs = fit.max_epochs is not None and 0 <= fit.max_epochs <= fit.epoch_progress.current.processed
    return steps or epochs or (trainer.should_stop and fit._can_stop_early)


class CountStepBeforeStopValidation(Callback):
    """A checkpoint saved in the validation that a stop (``max_time``, or ``trainer.should_stop`` set as a training
    batch ends) runs between the scheduled ones counts that batch's step among the steps logged: Lightning saves it
    uncounted and, resuming there, does not count it either, so the resumed fit would log every metric one step
    behind the uninterrupted fit (its ``metrics.csv`` repeating the step it stopped at). A scheduled validation's
    checkpoint Lightning counts on resuming."""

    def on_save_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]) -> None:
        stop_validation = trainer.validating and trainer.should_stop and after_a_step(trainer)
        if stop_validation and not validates_there_on_resuming(trainer):
            checkpoint["loops"]["fit_loop"]["epoch_loop.state_dict"]["_batches_that_stepped"] += 1


def after_a_step(trainer: Trainer) -> bool:
    """Whether a fit is where a training step has ended and only the hooks that follow it run (a validation, the
    epoch's end): its last batch completed, and not one whose gradient is accumulated for a later step."""
    loop = trainer.fit_loop.epoch_loop
    total = loop.batch_progress.total
    fitting = trainer.state.fn == TrainerFn.FITTING and not trainer.sanity_checking
    return fitting and total.completed == total.processed > 0 and not loop._should_accumulate()


def validates_there_on_resuming(trainer: Trainer) -> bool:
    """Whether a fit resumed after the training batch that ended last validates there (and so Lightning counts its
    step on resuming), as an uninterrupted fit would."""
    stop, trainer.should_stop = trainer.should_stop, False  # a resumed fit has not been told to stop
    try:
        return trainer.fit_loop.epoch_loop._should_check_val_fx(trainer.fit_loop._data_fetcher)
    finally:
        trainer.should_stop = stop


class EndProcessGroupAtExit(Callback):
    """Destroy the process group of a run on the gloo backend (DDP on CPUs) when its process exits, as Lightning does
    for NCCL's: else its threads can outlive it and abort the process (``terminate called without an active
    exception``), which fails a ``ddp_spawn`` run that had finished."""

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if torch.distributed.is_initialized() and torch.distributed.get_backend() == "gloo":
            atexit.unregister(end_process_group)  # once a process, which may run fit and test
            atexit.register(end_process_group)


def end_process_group() -> None:
    """Destroy the default process group, if any (once the process's work is done)."""
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
