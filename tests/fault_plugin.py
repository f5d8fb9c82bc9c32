"""Fault injection for the run-directory tests: SIGKILL a `hyperformer train` process (rank 0) at a chosen moment, as an
OOM kill would. Import it in the child process before running the CLI (`FAULT_CLI` in helpers.py); it reads
`HYPERFORMER_FAULT=phase[:step]` and hands `train` a callback that kills at that moment:

- `config`: once the run directory holds config.json (the Trainer is built, no step taken);
- `step:N`: after optimiser step N;
- `evaluate:N`: after the evaluation of step N is logged and the best adapter saved;
- `save:N`: checkpoint N's files written, its manifest not yet (`on_checkpoint_written`)."""
import os
import signal

from transformers import TrainerCallback

import hyperformer.cli


class FaultCallback(TrainerCallback):
    "SIGKILLs this process at `phase` (and optimiser step `step`, when given) on the main process."
    def __init__(self, spec:str):
        phase, _, at = spec.partition(":")
        self.phase, self.step = phase, int(at) if at else None

    def _kill(self, phase:str, state) -> None:
        if phase == self.phase and (self.step is None or state.global_step == self.step) and state.is_world_process_zero:
            os.kill(os.getpid(), signal.SIGKILL)

    def on_init_end(self, args, state, control, **kwargs): self._kill("config", state)
    def on_step_end(self, args, state, control, **kwargs): self._kill("step", state)
    def on_evaluate(self, args, state, control, **kwargs): self._kill("evaluate", state)
    def on_checkpoint_written(self, args, state, control, **kwargs): self._kill("save", state)


def _with_fault(train, spec:str):
    def train_with_fault(config, *args, callbacks=None, **kwargs):
        return train(config, *args, callbacks=list(callbacks or []) + [FaultCallback(spec)], **kwargs)
    return train_with_fault


if os.environ.get("HYPERFORMER_FAULT"):
    hyperformer.cli.train = _with_fault(hyperformer.cli.train, os.environ["HYPERFORMER_FAULT"])
