"""Tuner's module: a small random search over the settings that matter most for transfer.

Each trial trains exactly as Trainer does (models.trainer.fit_two_phases) on the train split
and is scored on the eval split's loss; the test split is never seen. The best values reach
Trainer through the Tuner's best_hyperparameters artifact (trainer.training_config).

KerasTuner's own Tuner class only accepts Keras 3 models, while TFX 1.16 trains tf-keras
(Keras 2) models, so the trials run through KerasTuner's framework-neutral BaseTuner.
"""
from typing import Dict

import keras_tuner
import tensorflow as tf
import tensorflow_transform as tft
from keras_tuner.engine import base_tuner
from tfx import v1 as tfx

from models import architectures, balance, builders, trainer

OBJECTIVE = keras_tuner.Objective("val_loss", direction="min")
DEFAULT_TRIALS = 4
DEFAULT_TRIAL_EPOCHS = 3


def search_space(model_name: str) -> keras_tuner.HyperParameters:
    """Learning rates of both phases, dropout, label smoothing and how much of the backbone
    to unfreeze (its top 60 layers, or all of it)."""
    space = keras_tuner.HyperParameters()
    space.Choice("head_learning_rate", [1e-3, 3e-4])
    space.Choice("dropout", [0.2, 0.4])
    space.Choice("label_smoothing", [0.0, 0.1])
    if model_name != architectures.BASELINE_CNN:
        space.Choice("fine_tune_learning_rate", [1e-4, 3e-5])
        space.Choice("fine_tune_layers", [60, builders.ALL_LAYERS])
    return space


class TwoPhaseTuner(base_tuner.BaseTuner):
    """Runs one Trainer-style training per trial and reports the best eval-split loss."""

    def __init__(self, base_config: Dict, **kwargs):
        super().__init__(**kwargs)
        self.base_config = base_config

    def run_trial(self, trial, train: tf.data.Dataset, validation: tf.data.Dataset,
                  steps_per_epoch: int, **fit_kwargs) -> Dict[str, float]:
        config = dict(self.base_config, **trial.hyperparameters.values)
        tf.keras.utils.set_random_seed(config["seed"])
        model = trainer.build_model(config)
        best = trainer.fit_two_phases(model, config, train, validation, steps_per_epoch,
                                      **fit_kwargs)
        return {OBJECTIVE.name: best.best}


def tuner_fn(fn_args: tfx.components.FnArgs) -> tfx.components.TunerFnResult:
    custom = dict(fn_args.custom_config or {})
    max_trials = custom.pop("max_trials", DEFAULT_TRIALS)
    trial_epochs = custom.pop("trial_epochs", DEFAULT_TRIAL_EPOCHS)
    config = dict(trainer.training_config(custom), epochs=trial_epochs)
    tf_transform_output = tft.TFTransformOutput(fn_args.transform_graph_path)
    groups = trainer.group_counts(fn_args.train_files)
    oracle = keras_tuner.oracles.RandomSearchOracle(
        objective=OBJECTIVE, max_trials=max_trials, seed=config["seed"],
        hyperparameters=search_space(config["model"]),
        allow_new_entries=False, tune_new_entries=False)
    tuner = TwoPhaseTuner(config, oracle=oracle, directory=fn_args.working_dir,
                          project_name="cxr_tuning", overwrite=True)
    train = trainer.input_fn(fn_args.train_files, fn_args.data_accessor, tf_transform_output,
                             config["batch_size"], training=True,
                             weights=balance.group_weights(groups, config["balance"]))
    validation = trainer.input_fn(fn_args.eval_files, fn_args.data_accessor,
                                  tf_transform_output, config["batch_size"], training=False)
    return tfx.components.TunerFnResult(tuner=tuner, fit_kwargs={
        "train": train,
        "validation": validation,
        "steps_per_epoch": trainer.steps_per_epoch(trainer.class_totals(groups),
                                                   config["batch_size"], fn_args.train_steps),
        "verbose": 2,
    })
