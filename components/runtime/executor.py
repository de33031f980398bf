"""Executors of TFX's Transform, Tuner, Trainer and Evaluator with what a compiled spec
settles only when a step runs: the digest of the module code the step runs (its
preprocessing_fn, tuner_fn or run_fn and what that imports) is checked against the code running
(the image's, on Vertex AI), and runtime parameters (epochs, blessing thresholds) are merged
into the configuration TFX's executor reads."""
import json
from typing import Any, Dict, List

import numpy as np
import tensorflow_model_analysis as tfma
from tfx import types
from tfx.components.evaluator import executor as evaluator_executor
from tfx.components.trainer import executor as trainer_executor
from tfx.components.transform import executor as transform_executor
from tfx.components.tuner import executor as tuner_executor
from tfx.extensions.google_cloud_ai_platform.trainer import executor as vertex_trainer_executor
from tfx.extensions.google_cloud_ai_platform.tuner import executor as vertex_tuner_executor
from tfx.types import standard_component_specs
from tfx.utils import proto_utils

from components import code_digest
from evaluation import thresholds
from evaluation.thresholds import THRESHOLD_KEYS

EPOCHS_KEY = "epochs"
CUSTOM_CONFIG_KEY = standard_component_specs.CUSTOM_CONFIG_KEY
# Arrays longer than this print as their first and last items (numpy's default is 1,000).
EVALUATOR_PRINT_THRESHOLD = 16


# The exec property naming the module function each step runs.
_FUNCTION_KEYS = (standard_component_specs.PREPROCESSING_FN_KEY,
                  standard_component_specs.TUNER_FN_KEY, standard_component_specs.RUN_FN_KEY)


def _check_models_code(exec_properties: Dict[str, Any]) -> None:
    custom_config = json.loads(exec_properties.get(CUSTOM_CONFIG_KEY) or "null") or {}
    recorded = custom_config.get(code_digest.CODE_SHA256_KEY)
    if not recorded:
        return
    [function_path] = [exec_properties[key] for key in _FUNCTION_KEYS if exec_properties.get(key)]
    code_digest.check(recorded, code_digest.function_module(function_path))


def with_epochs(exec_properties: Dict[str, Any]) -> Dict[str, Any]:
    """exec_properties with the epochs parameter moved into custom_config (models/trainer.py
    reads it there)."""
    properties = dict(exec_properties)
    epochs = properties.pop(EPOCHS_KEY, None)
    if epochs is not None:
        custom_config = json.loads(properties.get(CUSTOM_CONFIG_KEY) or "null") or {}
        properties[CUSTOM_CONFIG_KEY] = json.dumps({**custom_config, EPOCHS_KEY: int(epochs)})
    return properties


class _ModelsCode:
    def Do(self, input_dict: Dict[str, List[types.Artifact]],
           output_dict: Dict[str, List[types.Artifact]],
           exec_properties: Dict[str, Any]) -> None:
        _check_models_code(exec_properties)
        super().Do(input_dict, output_dict, exec_properties)


class Transform(_ModelsCode, transform_executor.Executor):
    pass


class Tuner(_ModelsCode, tuner_executor.Executor):
    pass


class VertexTuner(_ModelsCode, vertex_tuner_executor.Executor):
    pass


class _Epochs:
    def Do(self, input_dict: Dict[str, List[types.Artifact]],
           output_dict: Dict[str, List[types.Artifact]],
           exec_properties: Dict[str, Any]) -> None:
        _check_models_code(exec_properties)
        super().Do(input_dict, output_dict, with_epochs(exec_properties))


class Trainer(_Epochs, trainer_executor.GenericExecutor):
    pass


class VertexTrainer(_Epochs, vertex_trainer_executor.GenericExecutor):
    """The Vertex AI Training job receives the merged custom_config."""


def with_thresholds(exec_properties: Dict[str, Any]) -> Dict[str, Any]:
    """exec_properties with the threshold parameters written into eval_config."""
    properties = dict(exec_properties)
    values = [properties.pop(key, None) for key in THRESHOLD_KEYS]
    if all(value is None for value in values):
        return properties
    if any(value is None for value in values):
        raise ValueError(f"blessing thresholds {', '.join(THRESHOLD_KEYS)} come together")
    config = tfma.EvalConfig()
    proto_utils.json_to_proto(properties[standard_component_specs.EVAL_CONFIG_KEY], config)
    properties[standard_component_specs.EVAL_CONFIG_KEY] = proto_utils.proto_to_json(
        thresholds.apply(config, *(float(v) for v in values)))
    return properties


class Evaluator(evaluator_executor.Executor):
    """TFX's Evaluator with numpy's array printing summarized while it runs.

    TFMA calls the model's signatures positionally on each batch of serialized examples.
    TensorFlow first tries the keyword-only signature, fails, and writes the whole batch into
    the TypeError's message before the positional call succeeds; numpy's repr of ~1,000
    serialized images costs time that grows with the square of the batch (33.5 s of CPU for
    one 950-example batch against 1.2 s for the call itself), and Beam's batches grow with
    the data, which made the Evaluator's time per image grow with the test split. Summarized
    printing makes that message cheap. It applies in this process, that is with the
    in-memory DirectRunner (one Beam worker, the default); Beam worker processes print as
    numpy's defaults say.
    """

    def Do(self, input_dict: Dict[str, List[types.Artifact]],
           output_dict: Dict[str, List[types.Artifact]],
           exec_properties: Dict[str, Any]) -> None:
        with np.printoptions(threshold=EVALUATOR_PRINT_THRESHOLD):
            super().Do(input_dict, output_dict, with_thresholds(exec_properties))
