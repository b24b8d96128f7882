"""`StopOnInterrupt`: which signals stop training after the step, and which one stops it at once."""

from __future__ import annotations

import signal
from types import SimpleNamespace

import pytest

from kifabrik.train.callbacks import StopOnInterrupt


def _control() -> SimpleNamespace:
    return SimpleNamespace(should_save=False, should_training_stop=False)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGUSR1, signal.SIGINT])
def test_a_signal_saves_and_stops_after_the_step(sig):
    cb = StopOnInterrupt()
    cb.on_train_begin(None, None, None)
    try:
        signal.raise_signal(sig)
        control = _control()
        cb.on_step_end(None, None, control)
        assert (control.should_save, control.should_training_stop) == (True, True)
        assert cb.signal_name == sig.name
    finally:
        cb.restore()
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL and signal.getsignal(signal.SIGUSR1) is signal.SIG_DFL


def test_slurm_signals_twice_do_not_abort_the_checkpoint_but_ctrl_c_twice_does():
    cb = StopOnInterrupt()
    cb.on_train_begin(None, None, None)
    try:
        # Slurm signals both the job script and the step: the step may see SIGTERM twice, or SIGTERM then USR1
        signal.raise_signal(signal.SIGTERM)
        signal.raise_signal(signal.SIGTERM)
        signal.raise_signal(signal.SIGUSR1)
        assert cb.signal_name == "SIGTERM"
    finally:
        cb.restore()
    cb = StopOnInterrupt()
    cb.on_train_begin(None, None, None)
    try:
        signal.raise_signal(signal.SIGINT)
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGINT)
    finally:
        cb.restore()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
