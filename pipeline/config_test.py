import os

import pytest

from pipeline.config import PipelineConfig, settings_from_env


def test_flags_win_over_environment_which_wins_over_defaults(tmp_path):
    environ = {"CXR_DATA_DIR": str(tmp_path), "CXR_EPOCHS": "3", "CXR_MODEL": "baseline_cnn",
               "CXR_PIPELINE_ROOT": "gs://bucket/root", "CXR_VERTEX_TRAINING": "no",
               "CXR_SPLIT_PERCENTAGES": "60,20,20", "CXR_EXTRA_BEAM_ARGS": "--a=1 --b=2"}
    config = PipelineConfig.from_settings({"epochs": 5, "batch_size": None}, environ)
    assert config.epochs == 5
    assert config.model == "baseline_cnn"
    assert config.batch_size == 16
    assert config.pipeline_root == "gs://bucket/root"
    assert config.vertex_training is False
    assert config.split_percentages == (60, 20, 20)
    assert config.beam_args[-2:] == ["--a=1", "--b=2"]


def test_unparseable_environment_variable_names_itself():
    with pytest.raises(ValueError, match=r"CXR_EPOCHS='ten' is not a valid int"):
        settings_from_env({"CXR_EPOCHS": "ten"})


def test_missing_data_dir_says_how_to_set_it():
    with pytest.raises(ValueError, match="--data-dir or CXR_DATA_DIR"):
        PipelineConfig.from_settings({}, environ={})


def test_local_paths_become_absolute_and_uris_stay(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    local = PipelineConfig(data_dir="data", output_dir="out")
    assert local.pipeline_root == os.path.join(str(tmp_path), "out", "pipelines", "cxr")
    assert local.serving_dir == os.path.join(str(tmp_path), "out", "serving_model")
    cloud = PipelineConfig(data_dir="gs://b/data", pipeline_root="gs://b/root",
                           serving_dir="gs://b/serving")
    assert (cloud.data_dir, cloud.pipeline_root, cloud.serving_dir) == (
        "gs://b/data", "gs://b/root", "gs://b/serving")
    assert cloud.dataflow_temp_location == "gs://b/root/beam-temp"


def test_direct_runner_uses_multi_processing_only_with_several_workers(tmp_path):
    # No arguments: Beam's defaults (in memory, one worker), and TFX builds no sdist.
    assert PipelineConfig(data_dir=str(tmp_path)).beam_args == []
    assert PipelineConfig(data_dir=str(tmp_path), beam_direct_workers=2).beam_args == [
        "--direct_running_mode=multi_processing", "--direct_num_workers=2"]


def test_dataflow_arguments_come_from_the_config(tmp_path):
    config = PipelineConfig(data_dir="gs://b/data", pipeline_root="gs://b/root",
                            beam_runner="dataflow", project="p", region="europe-west4",
                            image="registry.example/cxr:1", dataflow_max_workers=8)
    assert config.beam_args == [
        "--runner=DataflowRunner", "--project=p", "--region=europe-west4",
        "--temp_location=gs://b/root/beam-temp", "--machine_type=n1-standard-4",
        "--max_num_workers=8", "--sdk_container_image=registry.example/cxr:1",
        "--experiments=use_runner_v2"]


@pytest.mark.parametrize("settings,message", [
    ({"beam_runner": "dataflow", "image": "i"}, "need project: pass --project or CXR_PROJECT"),
    ({"vertex_training": True, "project": "p"}, "need image: pass --image or CXR_IMAGE"),
    ({"beam_runner": "spark"}, "unknown Beam runner 'spark'"),
    ({"beam_direct_workers": 0}, "beam_direct_workers must be at least 1"),
])
def test_bad_engine_settings_are_rejected(tmp_path, settings, message):
    with pytest.raises(ValueError, match=message):
        PipelineConfig(data_dir=str(tmp_path), **settings)


def test_training_settings_reach_the_trainer_only_when_given(tmp_path):
    config = PipelineConfig.from_settings(
        {"data_dir": str(tmp_path), "head_learning_rate": 3e-4, "seed": 3},
        {"CXR_DROPOUT": "0.4", "CXR_BALANCE": "class_source"})
    assert config.trainer_config["head_learning_rate"] == 3e-4
    assert config.trainer_config["dropout"] == 0.4
    assert config.trainer_config["seed"] == 3
    assert config.trainer_config["balance"] == "class_source"
    assert "label_smoothing" not in PipelineConfig(data_dir=str(tmp_path)).trainer_config


@pytest.mark.parametrize("settings,message", [
    ({"head_learning_rate": 0.0}, r"head_learning_rate must be in \(0, 1\), got 0.0"),
    ({"dropout": 1.0}, r"dropout must be in \[0, 1\), got 1.0"),
    ({"label_smoothing": -0.1}, r"label_smoothing must be in \[0, 1\)"),
    ({"balance": "source"}, "unknown balance 'source'; choose one of class, class_source"),
])
def test_bad_training_settings_are_rejected(tmp_path, settings, message):
    with pytest.raises(ValueError, match=message):
        PipelineConfig(data_dir=str(tmp_path), **settings)
