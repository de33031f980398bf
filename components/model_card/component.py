"""ModelCardGenerator: a model card for every trained model, from its own test predictions.

Its output is a ModelCard folder: model_card.json (the source), model_card.md and
model_card.html (self-contained), confusion_matrix.png, roc_curves.png and predictions.csv
(one row per test image with its metadata and class probabilities). The ServingPusher copies
the card, with the version filled in, into the pushed version's assets.extra/.
"""
import json
from typing import Any, Dict, Optional

from tfx import types
from tfx.dsl.components.base import base_component, executor_spec
from tfx.orchestration import data_types
from tfx.types import standard_artifacts
from tfx.types.component_spec import ChannelParameter, ComponentSpec, ExecutionParameter

from components import code_digest
from components.model_card import executor
from evaluation import metrics
from evaluation.thresholds import THRESHOLD_KEYS


class ModelCard(types.Artifact):
    """Folder with model_card.{json,md,html}, the figures and predictions.csv."""
    TYPE_NAME = "cxr.ModelCard"  # KFP v2 (Vertex AI) needs namespace.Name


class ModelCardGeneratorSpec(ComponentSpec):
    PARAMETERS = {
        executor.MODEL_NAME_KEY: ExecutionParameter(type=str),
        executor.TRAINING_KEY: ExecutionParameter(type=str),
        executor.BLESSING_RULE_KEY: ExecutionParameter(type=str),
        executor.RESAMPLES_KEY: ExecutionParameter(type=int),
        code_digest.CODE_SHA256_KEY: ExecutionParameter(type=str),
        # Settings a Vertex AI run may change when submitted (runtime parameters): what
        # the card states comes from them, not from `training` and `blessing_rule`.
        executor.DATA_DIR_KEY: ExecutionParameter(type=str, optional=True),
        executor.EPOCHS_KEY: ExecutionParameter(type=int, optional=True),
        **{key: ExecutionParameter(type=float, optional=True) for key in THRESHOLD_KEYS},
    }
    INPUTS = {
        executor.MODEL_KEY: ChannelParameter(type=standard_artifacts.Model),
        executor.EXAMPLES_KEY: ChannelParameter(type=standard_artifacts.Examples),
        executor.EVALUATION_KEY: ChannelParameter(type=standard_artifacts.ModelEvaluation,
                                                  optional=True),
        executor.BLESSING_KEY: ChannelParameter(type=standard_artifacts.ModelBlessing,
                                                optional=True),
        executor.HYPERPARAMETERS_KEY: ChannelParameter(type=standard_artifacts.HyperParameters,
                                                       optional=True),
    }
    OUTPUTS = {executor.MODEL_CARD_KEY: ChannelParameter(type=ModelCard)}


def _run_time_parameters(settings: Dict[str, Any]) -> Dict[str, Any]:
    """pipeline.run_time_settings' runtime parameters, under this component's names."""
    names = {"data_root": executor.DATA_DIR_KEY, "epochs": executor.EPOCHS_KEY,
             **{key: key for key in THRESHOLD_KEYS}}
    return {names[key]: value for key, value in settings.items()
            if isinstance(value, data_types.RuntimeParameter)}


class ModelCardGenerator(base_component.BaseComponent):
    """Model card of `model` on the test split of `examples` (see module docstring).

    model_name: the name the model is served under.
    training: what Trainer was told (architecture, epochs, image size, weights, data dir).
    blessing_rule: the Evaluator's thresholds in words, quoted by the card.
    bootstrap_resamples: resamples of test patients for the 95% intervals.
    """
    SPEC_CLASS = ModelCardGeneratorSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)

    def __init__(self, model: types.BaseChannel, examples: types.BaseChannel,
                 model_name: str, training: Dict[str, Any], blessing_rule: str,
                 evaluation: Optional[types.BaseChannel] = None,
                 model_blessing: Optional[types.BaseChannel] = None,
                 hyperparameters: Optional[types.BaseChannel] = None,
                 bootstrap_resamples: int = metrics.DEFAULT_RESAMPLES,
                 run_time_settings: Optional[Dict[str, Any]] = None):
        if bootstrap_resamples < 1:
            raise ValueError(f"bootstrap resamples must be at least 1, got {bootstrap_resamples}")
        super().__init__(spec=ModelCardGeneratorSpec(
            model=model, examples=examples, evaluation=evaluation,
            model_blessing=model_blessing, hyperparameters=hyperparameters,
            model_name=model_name, training=json.dumps(training, sort_keys=True),
            blessing_rule=blessing_rule, bootstrap_resamples=bootstrap_resamples,
            code_sha256=code_digest.component_sha256("model_card"),
            **_run_time_parameters(run_time_settings or {}),
            model_card=types.Channel(type=ModelCard)))
