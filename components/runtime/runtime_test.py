"""Runtime parameters and code checks of the Transform/Tuner/Trainer/Evaluator executors."""
import json

import pytest

from components import code_digest
from components.runtime import executor
from evaluation import thresholds
from pipeline.config import PipelineConfig
from pipeline.pipeline import eval_config


def test_thresholds_set_at_run_time_equal_a_config_built_with_them(tmp_path):
    built = eval_config(PipelineConfig(data_dir=str(tmp_path), min_covid_recall=0.9,
                                       min_macro_auc=0.7, max_regression=0.05))
    default = eval_config(PipelineConfig(data_dir=str(tmp_path)))
    assert default != built
    assert thresholds.apply(default, 0.9, 0.7, 0.05) == built


def test_evaluator_writes_the_threshold_parameters_into_eval_config(tmp_path):
    from tfx.types import standard_component_specs
    from tfx.utils import proto_utils

    default = eval_config(PipelineConfig(data_dir=str(tmp_path)))
    properties = executor.with_thresholds({
        standard_component_specs.EVAL_CONFIG_KEY: proto_utils.proto_to_json(default),
        "min_covid_recall": 0.5, "min_macro_auc": 0.6, "max_regression": 0.1})
    assert set(properties) == {standard_component_specs.EVAL_CONFIG_KEY}
    expected = eval_config(PipelineConfig(data_dir=str(tmp_path), min_covid_recall=0.5,
                                          min_macro_auc=0.6, max_regression=0.1))
    assert properties[standard_component_specs.EVAL_CONFIG_KEY] == \
        proto_utils.proto_to_json(expected)


def test_trainer_reads_the_epochs_parameter_through_custom_config():
    properties = executor.with_epochs({"custom_config": json.dumps({"epochs": 10, "model": "x"}),
                                       "epochs": 3})
    assert json.loads(properties["custom_config"]) == {"epochs": 3, "model": "x"}
    assert "epochs" not in properties


def test_code_that_differs_from_the_compiled_digest_stops_the_step():
    current = code_digest.module_sha256("models.trainer")
    code_digest.check(current, "models.trainer")
    code_digest.check(None, "models.trainer")
    properties = {"custom_config": json.dumps({code_digest.CODE_SHA256_KEY: "0" * 64}),
                  "run_fn": "models.trainer.run_fn"}
    with pytest.raises(code_digest.CodeMismatchError,
                       match=r"^the code of models.trainer \(\d+ files in models\) has sha256 "
                             r"\w{12}…, not 000000000000… as when the pipeline was compiled: "
                             r"build the image and compile the spec from one checkout$"):
        executor.Trainer().Do({}, {}, properties)


def test_custom_components_check_their_own_code_digest():
    from components.grad_cam import executor as grad_cam_executor
    with pytest.raises(code_digest.CodeMismatchError, match="components/grad_cam"):
        grad_cam_executor.Executor().Do({}, {}, {code_digest.CODE_SHA256_KEY: "f" * 64})


def test_evaluator_runs_tfma_with_long_arrays_printed_summarized(monkeypatch):
    import numpy as np
    from tfx.components.evaluator import executor as evaluator_executor

    seen = {}

    def tfx_do(self, input_dict, output_dict, exec_properties):
        # What TensorFlow writes into a failed binding's message: a batch of examples.
        seen["repr"] = repr(np.array([b"x" * 30_000] * 950, dtype=object))
        raise RuntimeError("tfma failed")

    monkeypatch.setattr(evaluator_executor.Executor, "Do", tfx_do)
    threshold = np.get_printoptions()["threshold"]
    with pytest.raises(RuntimeError, match="tfma failed"):
        executor.Evaluator().Do({}, {}, {})
    assert "..." in seen["repr"] and len(seen["repr"]) < 7 * 30_100
    assert np.get_printoptions()["threshold"] == threshold
