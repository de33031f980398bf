"""The Vertex AI spec compiled from the real pipeline, checked against the local pipeline.

Expected tasks and edges come from create_pipeline's own object, so a component added to
the pipeline is covered without editing this file.
"""
import json
import os
import re

import pytest
from google.protobuf import json_format
from kfp.pipeline_spec import pipeline_spec_pb2
from tfx import version as tfx_version
from tfx.dsl.components.base import executor_spec
from tfx.extensions.google_cloud_ai_platform.trainer import executor as vertex_trainer_executor

from components import code_digest
from components.curated_schema.executor import file_sha256
from components.runtime import executor
from conftest import REPO_ROOT
from evaluation.thresholds import THRESHOLD_KEYS
from pipeline import runners, spec_runner
from pipeline.config import IMAGE_PROJECT_DIR, IMAGE_SCHEMA_FILE, PipelineConfig
from pipeline.pipeline import create_pipeline
from schemas import SCHEMA_FILE

IMAGE = "europe-docker.pkg.dev/test-project/cxr/pipeline:test"
SERVING_IMAGE = "europe-docker.pkg.dev/vertex-ai/prediction/tf2-cpu.2-15:latest"


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    """(local pipeline, PipelineSpec, deployment config) for a Dataflow + Vertex Training spec."""
    root = tmp_path_factory.mktemp("vertex")
    config = PipelineConfig(
        data_dir=str(root / "data"), output_dir=str(root / "out"),
        pipeline_root=str(root / "placeholder-root"), image=IMAGE, project="test-project",
        region="europe-west4", beam_runner="dataflow", vertex_training=True,
        vertex_accelerator_type="NVIDIA_TESLA_T4", vertex_accelerator_count=2,
        dataflow_service_account="runner@test-project.iam.gserviceaccount.com",
        dataflow_subnetwork="regions/europe-west4/subnetworks/private",
        vertex_endpoint="cxr-endpoint", vertex_serving_image=SERVING_IMAGE, epochs=7)
    output = root / "pipeline.json"
    runners.compile_vertex(config, str(output))
    job = json.loads(output.read_text())
    spec = json_format.ParseDict(job["pipelineSpec"], pipeline_spec_pb2.PipelineSpec())
    deployment = json_format.ParseDict(
        json_format.MessageToDict(spec.deployment_spec),
        pipeline_spec_pb2.PipelineDeploymentConfig())
    assert job["runtimeConfig"]["gcsOutputDirectory"] == config.pipeline_root
    return config, create_pipeline(config), spec, deployment


def _node_of(task_name: str, node_ids) -> str:
    """The pipeline node a KFP task comes from (a Resolver compiles to '<id>-...' tasks)."""
    owners = [n for n in node_ids if task_name == n or task_name.startswith(n + "-")]
    assert owners, f"task {task_name} matches no pipeline node"
    return max(owners, key=len)


def _executor(spec, deployment, task_name):
    label = spec.components[spec.root.dag.tasks[task_name].component_ref.name].executor_label
    return deployment.executors[label]


def test_every_component_is_a_task_and_the_edges_match_the_local_pipeline(compiled):
    _, local, spec, _ = compiled
    node_ids = [node.id for node in local.components]
    tasks = spec.root.dag.tasks
    assert {_node_of(name, node_ids) for name in tasks} == set(node_ids)
    compiled_edges = {(_node_of(upstream, node_ids), _node_of(name, node_ids))
                      for name, task in tasks.items() for upstream in task.dependent_tasks}
    local_edges = {(upstream.id, node.id)
                   for node in local.components for upstream in node.upstream_nodes}
    assert compiled_edges == local_edges
    assert "AnomalyGate" in tasks["Transform"].dependent_tasks


def test_every_container_runs_the_given_image(compiled):
    _, _, spec, deployment = compiled
    containers = [_executor(spec, deployment, name).container for name in spec.root.dag.tasks
                  if _executor(spec, deployment, name).HasField("container")]
    assert len(containers) >= 8
    assert {container.image for container in containers} == {IMAGE}


def test_dataflow_arguments_reach_every_beam_component(compiled):
    config, local, spec, deployment = compiled
    beam_nodes = [node.id for node in local.components
                  if isinstance(node.executor_spec, executor_spec.BeamExecutorSpec)]
    assert {"ImageExampleGen", "StatisticsGen", "Transform", "Evaluator"} <= set(beam_nodes)
    assert "--runner=DataflowRunner" in config.beam_args
    for node_id in beam_nodes:
        args = list(_executor(spec, deployment, node_id).container.args)
        assert args[-len(config.beam_args):] == config.beam_args, node_id


def test_image_example_gen_keeps_its_executor_and_a_pre_cache_driver(compiled):
    _, _, spec, deployment = compiled
    container = _executor(spec, deployment, "ImageExampleGen").container
    args = list(container.args)
    assert args[args.index("--executor_class_path") + 1] == (
        "components.image_example_gen.executor.Executor")
    assert container.lifecycle.pre_cache_check.command


def test_trainer_runs_on_vertex_training_with_the_image(compiled):
    _, _, spec, deployment = compiled
    args = list(_executor(spec, deployment, "Trainer").container.args)
    assert args[args.index("--executor_class_path") + 1] == (
        "components.runtime.executor.VertexTrainer")
    assert issubclass(executor.VertexTrainer, vertex_trainer_executor.GenericExecutor)
    parameter = spec.root.dag.tasks["Trainer"].inputs.parameters["custom_config"]
    custom_config = json.loads(parameter.runtime_value.constant_value.string_value)
    assert custom_config["ai_platform_enable_vertex"] is True
    assert custom_config["ai_platform_vertex_region"] == "europe-west4"
    pools = custom_config["ai_platform_training_args"]["worker_pool_specs"]
    assert [pool["container_spec"]["image_uri"] for pool in pools] == [IMAGE]
    assert [pool["machine_spec"] for pool in pools] == [{
        "machine_type": "n1-standard-8", "accelerator_type": "NVIDIA_TESLA_T4",
        "accelerator_count": 2}]
    assert custom_config["model"] == "mobilenet_v2"


def test_schema_is_read_from_the_image(compiled):
    _, _, spec, _ = compiled
    schema = spec.root.dag.tasks["ImportSchemaGen"].inputs.parameters["schema_file"]
    assert schema.runtime_value.constant_value.string_value == IMAGE_SCHEMA_FILE
    digest = spec.root.dag.tasks["ImportSchemaGen"].inputs.parameters["schema_sha256"]
    assert digest.runtime_value.constant_value.string_value == file_sha256(SCHEMA_FILE)


def test_data_epochs_and_thresholds_are_runtime_parameters_with_the_config_defaults(compiled):
    config, _, spec, _ = compiled
    declared = spec.root.input_definitions.parameters
    assert set(declared) == {"data_root", "epochs", "min_covid_recall", "min_macro_auc",
                             "max_regression"}
    job = json.loads(open(os.path.join(os.path.dirname(config.output_dir),
                                       "pipeline.json")).read())
    assert spec_runner.parameter_values(job, {}) == {
        "data_root": config.data_dir, "epochs": 7, "min_covid_recall": 0.8,
        "min_macro_auc": 0.8, "max_regression": 0.0}
    consumers = {(task_name, key): spec_input.component_input_parameter
                 for task_name, task in spec.root.dag.tasks.items()
                 for key, spec_input in task.inputs.parameters.items()
                 if spec_input.component_input_parameter}
    assert consumers == {
        ("ImageExampleGen", "input_base"): "data_root", ("Trainer", "epochs"): "epochs",
        **{("Evaluator", key): key for key in THRESHOLD_KEYS},
        ("ModelCardGenerator", "data_dir"): "data_root",
        ("ModelCardGenerator", "epochs"): "epochs",
        **{("ModelCardGenerator", key): key for key in THRESHOLD_KEYS}}


def test_code_digests_ride_in_the_spec_for_every_step_that_runs_project_code(compiled):
    _, _, spec, deployment = compiled
    tasks = spec.root.dag.tasks
    for name, module in (("Transform", "models.preprocessing"), ("Trainer", "models.trainer")):
        custom_config = json.loads(tasks[name].inputs.parameters["custom_config"]
                                   .runtime_value.constant_value.string_value)
        assert custom_config[code_digest.CODE_SHA256_KEY] == \
            code_digest.module_sha256(module), name
        args = list(_executor(spec, deployment, name).container.args)
        assert args[args.index("--executor_class_path") + 1].startswith(
            "components.runtime.executor."), name
    for name, package in (("GradCam", "grad_cam"), ("ModelCardGenerator", "model_card"),
                          ("Pusher", "serving_pusher")):
        digest = tasks[name].inputs.parameters[code_digest.CODE_SHA256_KEY]
        assert digest.runtime_value.constant_value.string_value == \
            code_digest.component_sha256(package), name


def test_dataflow_runs_as_the_given_service_account_in_the_given_subnetwork(compiled):
    config, _, _, _ = compiled
    assert "--service_account_email=runner@test-project.iam.gserviceaccount.com" in \
        config.beam_args
    assert "--subnetwork=regions/europe-west4/subnetworks/private" in config.beam_args


def test_the_blessed_model_also_goes_to_the_vertex_model_registry(compiled):
    _, _, spec, deployment = compiled
    task = spec.root.dag.tasks["VertexPusher"]
    assert set(task.dependent_tasks) == {"Trainer", "Evaluator"}
    args = list(_executor(spec, deployment, "VertexPusher").container.args)
    assert args[args.index("--executor_class_path") + 1] == (
        "tfx.extensions.google_cloud_ai_platform.pusher.executor.Executor")
    custom_config = json.loads(task.inputs.parameters["custom_config"]
                               .runtime_value.constant_value.string_value)
    assert custom_config["ai_platform_enable_vertex"] is True
    assert custom_config["ai_platform_vertex_container_image_uri"] == SERVING_IMAGE
    assert custom_config["ai_platform_serving_args"] == {
        "project": "test-project", "endpoint_name": "cxr-endpoint",
        "machine_type": "n1-standard-2"}


def test_dockerfile_builds_on_the_pinned_tfx_image_and_installs_where_specs_look():
    with open(os.path.join(REPO_ROOT, "Dockerfile")) as f:
        dockerfile = f.read()
    assert re.search(rf"^FROM tensorflow/tfx:{re.escape(tfx_version.__version__)}$",
                     dockerfile, re.M)
    assert re.search(rf"^COPY \. {IMAGE_PROJECT_DIR}$", dockerfile, re.M)
    assert re.search(r"^ENV TF_USE_LEGACY_KERAS=1$", dockerfile, re.M)
    assert "python -m cxr.requirements dicom > /tmp/dicom-requirements.txt" in dockerfile
    assert os.path.relpath(IMAGE_SCHEMA_FILE, IMAGE_PROJECT_DIR) == os.path.join(
        "schemas", "schema.pbtxt")
    assert os.path.isfile(os.path.join(REPO_ROOT, "schemas", "schema.pbtxt"))


def test_pipeline_name_that_vertex_rejects_is_a_clear_error(tmp_path):
    config = PipelineConfig(data_dir=str(tmp_path), pipeline_name="CXR_v1", image=IMAGE)
    with pytest.raises(ValueError, match="pipeline name 'CXR_v1' is not valid on Vertex AI"):
        runners.compile_vertex(config, str(tmp_path / "pipeline.json"))
