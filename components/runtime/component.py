"""TFX's Transform, Tuner, Trainer and Evaluator, with the executors of executor.py.

Trainer takes `epochs` and Evaluator the three blessing thresholds as execution parameters
of their own: a Vertex AI runtime parameter can only fill a whole parameter, and TFX's own
components keep these inside custom_config and eval_config.
"""
import json
from typing import Any, Dict, List, Optional, Union

import tensorflow_model_analysis as tfma
from tfx import types
from tfx import v1 as tfx
from tfx.dsl.components.base import base_component, executor_spec
from tfx.orchestration import data_types
from tfx.proto import trainer_pb2
from tfx.types import standard_artifacts, standard_component_specs
from tfx.types.component_spec import ExecutionParameter

from components.runtime import executor
from evaluation.thresholds import THRESHOLD_KEYS

IntParameter = Union[int, data_types.RuntimeParameter]
FloatParameter = Union[float, data_types.RuntimeParameter]


class Transform(tfx.components.Transform):
    EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(executor.Transform)


class Tuner(tfx.components.Tuner):
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Tuner)


class VertexTuner(tfx.extensions.google_cloud_ai_platform.Tuner):
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.VertexTuner)


class TrainerSpec(standard_component_specs.TrainerSpec):
    PARAMETERS = {**standard_component_specs.TrainerSpec.PARAMETERS,
                  executor.EPOCHS_KEY: ExecutionParameter(type=int)}


class Trainer(base_component.BaseComponent):
    """TFX's Trainer (run_fn by module path) with `epochs` as a parameter; vertex=True runs
    run_fn as a Vertex AI Training job (TFX's Vertex Trainer executor)."""
    SPEC_CLASS = TrainerSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Trainer)

    def __init__(self, examples: types.BaseChannel, transform_graph: types.BaseChannel,
                 run_fn: str, epochs: IntParameter, custom_config: Dict[str, Any],
                 hyperparameters: Optional[types.BaseChannel] = None,
                 train_args: Optional[trainer_pb2.TrainArgs] = None,
                 eval_args: Optional[trainer_pb2.EvalArgs] = None, vertex: bool = False):
        super().__init__(spec=TrainerSpec(
            examples=examples, transform_graph=transform_graph,
            hyperparameters=hyperparameters, run_fn=run_fn, epochs=epochs,
            train_args=train_args or trainer_pb2.TrainArgs(),
            eval_args=eval_args or trainer_pb2.EvalArgs(),
            custom_config=json.dumps(custom_config, sort_keys=True),
            model=types.Channel(type=standard_artifacts.Model),
            model_run=types.Channel(type=standard_artifacts.ModelRun)),
            custom_executor_spec=(executor_spec.ExecutorClassSpec(executor.VertexTrainer)
                                  if vertex else None))


class EvaluatorSpec(standard_component_specs.EvaluatorSpec):
    PARAMETERS = {**standard_component_specs.EvaluatorSpec.PARAMETERS,
                  **{key: ExecutionParameter(type=float, optional=True)
                     for key in THRESHOLD_KEYS}}


class Evaluator(base_component.BaseComponent):
    """TFX's Evaluator (TFMA) with the blessing thresholds as parameters, written into
    eval_config when it runs."""
    SPEC_CLASS = EvaluatorSpec
    EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(executor.Evaluator)

    def __init__(self, examples: types.BaseChannel, model: types.BaseChannel,
                 baseline_model: types.BaseChannel, example_splits: List[str],
                 eval_config: tfma.EvalConfig, min_covid_recall: FloatParameter,
                 min_macro_auc: FloatParameter, max_regression: FloatParameter):
        super().__init__(spec=EvaluatorSpec(
            examples=examples, model=model, baseline_model=baseline_model,
            example_splits=json.dumps(example_splits), eval_config=eval_config,
            fairness_indicator_thresholds="null",
            min_covid_recall=min_covid_recall, min_macro_auc=min_macro_auc,
            max_regression=max_regression,
            evaluation=types.Channel(type=standard_artifacts.ModelEvaluation),
            blessing=types.Channel(type=standard_artifacts.ModelBlessing)))
