"""create_pipeline: the one place where the components are wired together."""
import os
from typing import Any, Dict, List, Optional

import tensorflow_model_analysis as tfma
from tfx import v1 as tfx
from tfx.orchestration import data_types

from components import code_digest
from components.anomaly_gate.component import AnomalyGate
from components.curated_schema.component import CuratedSchemaImporter
from components.grad_cam.component import GradCam
from components.image_example_gen.component import ImageExampleGen
from components.model_card.component import ModelCardGenerator
from components.runtime import component as runtime
from components.serving_pusher.component import ServingPusher
from evaluation.thresholds import THRESHOLD_KEYS
from models import features
from pipeline.config import PipelineConfig

PER_CLASS_METRICS = ("Precision", "Recall", "F1Score", "AUC")
# The module functions Transform, Tuner and Trainer run. TFX names them by path and does not
# hash their code: each step's custom_config carries the digest of the code its function
# loads (components/code_digest.py), checked again when the step runs.
PREPROCESSING_FN = "models.preprocessing.preprocessing_fn"
TUNER_FN = "models.tuning.tuner_fn"
RUN_FN = "models.trainer.run_fn"


def _overall_only(threshold: tfma.MetricThreshold) -> List[tfma.PerSliceMetricThreshold]:
    """Blessing looks at the whole test split; small slices would fail on noise or NaN."""
    return [tfma.PerSliceMetricThreshold(slicing_specs=[tfma.SlicingSpec()], threshold=threshold)]


def _per_class_specs(config: PipelineConfig) -> List[tfma.MetricsSpec]:
    """Precision, recall (sensitivity), F1 and one-vs-rest AUC for each class.

    COVID-19 gets its own spec so that only its recall carries the blessing floor.
    """
    covid_recall = _overall_only(tfma.MetricThreshold(value_threshold=tfma.GenericValueThreshold(
        lower_bound={"value": config.min_covid_recall})))
    other_classes = [i for i in range(features.NUM_CLASSES) if i != features.COVID_CLASS_ID]
    return [
        tfma.MetricsSpec(
            metrics=[tfma.MetricConfig(class_name=name, per_slice_thresholds=(
                covid_recall if name == "Recall" else None)) for name in PER_CLASS_METRICS],
            binarize=tfma.BinarizationOptions(class_ids={"values": [features.COVID_CLASS_ID]})),
        tfma.MetricsSpec(
            metrics=[tfma.MetricConfig(class_name=name) for name in PER_CLASS_METRICS],
            binarize=tfma.BinarizationOptions(class_ids={"values": other_classes})),
    ]


def code_sha256(function_path: str) -> Dict[str, str]:
    return {code_digest.CODE_SHA256_KEY:
            code_digest.module_sha256(code_digest.function_module(function_path))}


def eval_config(config: PipelineConfig) -> tfma.EvalConfig:
    """TFMA on raw examples: labels come from the model's own transform_features signature."""
    no_regression = tfma.GenericChangeThreshold(
        direction=tfma.MetricDirection.HIGHER_IS_BETTER,
        absolute={"value": -config.max_regression - 1e-10})
    macro_auc = _overall_only(tfma.MetricThreshold(
        value_threshold=tfma.GenericValueThreshold(lower_bound={"value": config.min_macro_auc}),
        change_threshold=no_regression))
    return tfma.EvalConfig(
        model_specs=[tfma.ModelSpec(
            signature_name=features.TF_EXAMPLE_SIGNATURE,
            preprocessing_function_names=[features.TRANSFORM_SIGNATURE],
            label_key=features.LABEL_XF_KEY,
            prediction_key=features.PROBABILITIES_OUTPUT)],
        # The model's compiled loss and metrics would be recomputed by TFMA for nothing.
        options=tfma.Options(include_default_metrics={"value": False}),
        slicing_specs=[tfma.SlicingSpec()] + [
            tfma.SlicingSpec(feature_keys=[key])
            for key in (features.LABEL_KEY, features.SOURCE_KEY, features.AGE_GROUP_KEY)],
        metrics_specs=[
            tfma.MetricsSpec(metrics=[
                tfma.MetricConfig(class_name="ExampleCount"),
                tfma.MetricConfig(class_name="SparseCategoricalAccuracy"),
                tfma.MetricConfig(class_name="MultiClassConfusionMatrixPlot"),
            ]),
            tfma.MetricsSpec(
                metrics=[tfma.MetricConfig(class_name="AUC", per_slice_thresholds=macro_auc)],
                aggregate=tfma.AggregationOptions(
                    macro_average=True,
                    class_weights={i: 1.0 for i in range(features.NUM_CLASSES)})),
        ] + _per_class_specs(config))


def run_time_settings(config: PipelineConfig, runtime_parameters: bool = False
                      ) -> Dict[str, Any]:
    """The settings a Vertex AI run may change when it is submitted (`cxr submit --param`):
    their values, or runtime parameters defaulting to them."""
    values = {"data_root": config.data_dir, "epochs": config.epochs,
              **{key: getattr(config, key) for key in THRESHOLD_KEYS}}
    if not runtime_parameters:
        return values
    return {name: data_types.RuntimeParameter(name=name, ptype=type(value), default=value)
            for name, value in values.items()}


def create_pipeline(config: PipelineConfig, schema_sha256: Optional[str] = None,
                    runtime_parameters: bool = False) -> tfx.dsl.Pipeline:
    """schema_sha256: the curated schema's digest when config.schema_file names the copy
    inside a container image (compile_vertex), which is not readable here.
    runtime_parameters: the data folder, epochs and blessing thresholds become runtime
    parameters of the compiled spec (run_time_settings)."""
    settings = run_time_settings(config, runtime_parameters)
    example_gen = ImageExampleGen(settings["data_root"], config.split_percentages,
                                  config.ingest_options)
    # Keeps ImportSchemaGen's node id: the same place in the pipeline, under MLMD and on disk.
    schema_importer = CuratedSchemaImporter(
        config.schema_file, schema_sha256).with_id("ImportSchemaGen")
    statistics_gen = tfx.components.StatisticsGen(
        examples=example_gen.outputs["examples"], schema=schema_importer.outputs["schema"])
    example_validator = tfx.components.ExampleValidator(
        statistics=statistics_gen.outputs["statistics"], schema=schema_importer.outputs["schema"])
    anomaly_gate = AnomalyGate(anomalies=example_validator.outputs["anomalies"])

    # materialize=False: Trainer applies the transform graph to raw examples (docs/pipeline.md).
    transform = runtime.Transform(
        examples=example_gen.outputs["examples"],
        schema=schema_importer.outputs["schema"],
        preprocessing_fn=PREPROCESSING_FN,
        custom_config={"image_size": config.image_size, **code_sha256(PREPROCESSING_FN)},
        materialize=False,
        disable_statistics=True)
    transform.add_upstream_node(anomaly_gate)

    # TFX's Vertex Tuner and Trainer run the same module code as Vertex AI Training jobs of
    # the pipeline image.
    tuner_class = runtime.VertexTuner if config.vertex_training else runtime.Tuner
    tuner = tuner_class(
        examples=example_gen.outputs["examples"],
        transform_graph=transform.outputs["transform_graph"],
        tuner_fn=TUNER_FN,
        train_args=tfx.proto.TrainArgs(num_steps=config.train_steps),
        eval_args=tfx.proto.EvalArgs(),
        custom_config={**config.tuner_config, **code_sha256(TUNER_FN)}) if config.tune else None

    trainer = runtime.Trainer(
        examples=example_gen.outputs["examples"],
        transform_graph=transform.outputs["transform_graph"],
        run_fn=RUN_FN,
        epochs=settings["epochs"],
        hyperparameters=tuner.outputs["best_hyperparameters"] if tuner else None,
        train_args=tfx.proto.TrainArgs(num_steps=config.train_steps),
        eval_args=tfx.proto.EvalArgs(),
        custom_config={**config.trainer_config, **config.vertex_training_config,
                       **code_sha256(RUN_FN)},
        vertex=config.vertex_training)

    baseline_resolver = tfx.dsl.Resolver(
        strategy_class=tfx.dsl.experimental.LatestBlessedModelStrategy,
        model=tfx.dsl.Channel(type=tfx.types.standard_artifacts.Model),
        model_blessing=tfx.dsl.Channel(type=tfx.types.standard_artifacts.ModelBlessing),
    ).with_id("latest_blessed_model_resolver")

    evaluator = runtime.Evaluator(
        examples=example_gen.outputs["examples"],
        model=trainer.outputs["model"],
        baseline_model=baseline_resolver.outputs["model"],
        example_splits=["test"],
        eval_config=eval_config(config),
        **{key: settings[key] for key in THRESHOLD_KEYS})

    # Explains the evaluated model on the test split; its report records the blessing.
    grad_cam = GradCam(
        model=trainer.outputs["model"],
        examples=example_gen.outputs["examples"],
        model_blessing=evaluator.outputs["blessing"],
        images_per_class=config.gradcam_images_per_class,
        include_all_misclassified=config.gradcam_all_misclassified,
        max_misclassified=config.gradcam_max_misclassified,
        target_layer=config.gradcam_target_layer,
        overlay_alpha=config.gradcam_overlay_alpha,
        faithfulness_steps=config.gradcam_steps)

    model_card = ModelCardGenerator(
        model=trainer.outputs["model"],
        examples=example_gen.outputs["examples"],
        evaluation=evaluator.outputs["evaluation"],
        model_blessing=evaluator.outputs["blessing"],
        hyperparameters=tuner.outputs["best_hyperparameters"] if tuner else None,
        model_name=config.serving_model_name,
        training={**config.trainer_config, "data_dir": config.data_dir},
        blessing_rule=config.blessing_rule,
        run_time_settings=settings)

    # TFX's Pusher contract (PushedModel, <base>/<version>/), but atomic and with the card.
    pusher = ServingPusher(
        model=trainer.outputs["model"],
        model_blessing=evaluator.outputs["blessing"],
        model_card=model_card.outputs["model_card"],
        base_directory=os.path.join(config.serving_dir, config.serving_model_name)
    ).with_id("Pusher")
    # Optionally also to the Vertex AI Model Registry, deployed to an endpoint.
    vertex_pusher = tfx.extensions.google_cloud_ai_platform.Pusher(
        model=trainer.outputs["model"],
        model_blessing=evaluator.outputs["blessing"],
        custom_config=config.vertex_push_config).with_id("VertexPusher") \
        if config.vertex_endpoint else None

    return tfx.dsl.Pipeline(
        pipeline_name=config.pipeline_name,
        pipeline_root=config.pipeline_root,
        components=[example_gen, schema_importer, statistics_gen, example_validator,
                    anomaly_gate, transform] + ([tuner] if tuner else []) + [
                    trainer, baseline_resolver, evaluator, grad_cam, model_card,
                    pusher] + ([vertex_pusher] if vertex_pusher else []),
        enable_cache=True,
        metadata_connection_config=tfx.orchestration.metadata.sqlite_metadata_connection_config(
            config.metadata_path),
        beam_pipeline_args=config.beam_args)
