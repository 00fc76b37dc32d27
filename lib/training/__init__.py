"""The trainer: fit one run's model from its run directory, with Keras' own callbacks.

``train_run(run_dir)`` (lib.training.run) is what a worker process and the CLI
call; the package is cut by concept:

- :mod:`lib.training.run`: validation, the stages of a run, the failure messages;
- :mod:`lib.training.schedules`: learning-rate schedules, optimizers, the LR plan;
- :mod:`lib.training.callbacks`: progress events, stop requests, atomic checkpoints;
- :mod:`lib.training.resume`: the BackupAndRestore checkpoint and history.csv.

Importing it imports Keras: import it only in processes that train.
"""

from lib.training.callbacks import (
    PROGRESS_INTERVAL_S,
    STOP_CHECK_INTERVAL_S,
    AtomicModelCheckpoint,
    LastWeights,
    ProgressWriter,
    ScheduleClock,
    TerminalProgress,
    build_callbacks,
    tensorboard_available,
)
from lib.training.resume import (
    BACKUP_METADATA,
    BACKUP_PREVIOUS,
    BACKUP_WEIGHTS,
    previous_train_seconds,
    read_backup_epoch,
    repair_backup,
    trim_history,
)
from lib.training.run import (
    RunConfigError,
    TrainingData,
    TrainOutcome,
    balanced_class_weights,
    epoch_steps,
    exact_steps,
    failure_message,
    prepare_data,
    train_run,
    validate_run,
)
from lib.training.schedules import (
    LR_PLAN_POINTS,
    OneCycle,
    current_lr,
    lr_plan,
    make_optimizer,
    make_schedule,
    total_steps,
)

__all__ = [
    "BACKUP_METADATA",
    "BACKUP_PREVIOUS",
    "BACKUP_WEIGHTS",
    "LR_PLAN_POINTS",
    "PROGRESS_INTERVAL_S",
    "STOP_CHECK_INTERVAL_S",
    "AtomicModelCheckpoint",
    "LastWeights",
    "OneCycle",
    "ProgressWriter",
    "RunConfigError",
    "ScheduleClock",
    "TerminalProgress",
    "TrainOutcome",
    "TrainingData",
    "balanced_class_weights",
    "build_callbacks",
    "current_lr",
    "epoch_steps",
    "exact_steps",
    "failure_message",
    "lr_plan",
    "make_optimizer",
    "make_schedule",
    "prepare_data",
    "previous_train_seconds",
    "read_backup_epoch",
    "repair_backup",
    "tensorboard_available",
    "total_steps",
    "train_run",
    "trim_history",
    "validate_run",
]
