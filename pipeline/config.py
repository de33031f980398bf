"""One configuration object for every engine; runners and the CLI only fill it in.

Every field can also come from the environment as CXR_<FIELD> (CXR_PIPELINE_ROOT, CXR_IMAGE,
CXR_EPOCHS...). Command-line flags win over the environment, which wins over the defaults.
"""
import dataclasses
import os
import shlex
import typing
from typing import Any, Dict, List, Mapping, Optional, Tuple

from tfx.v1.extensions import google_cloud_ai_platform as vertex

from components.grad_cam.component import check_parameters as check_gradcam_parameters
from components.image_example_gen.component import check_split_percentages
from evaluation import thresholds
from explain import gradcam_defaults
from imaging.ingest import IngestOptions
from models import architectures, balance, builders, features, trainer
from schemas import SCHEMA_FILE

ENV_PREFIX = "CXR_"
BEAM_RUNNERS = ("direct", "dataflow")
# The Dockerfile copies the project here; file paths baked into a compiled spec must exist there.
IMAGE_PROJECT_DIR = "/cxr"
IMAGE_SCHEMA_FILE = os.path.join(IMAGE_PROJECT_DIR, "schemas", os.path.basename(SCHEMA_FILE))


@dataclasses.dataclass
class PipelineConfig:
    data_dir: str
    output_dir: str = "outputs"
    pipeline_name: str = "cxr"
    # Default to <output_dir>/pipelines/<pipeline_name> and <output_dir>/serving_model.
    pipeline_root: Optional[str] = None
    serving_dir: Optional[str] = None
    schema_file: str = SCHEMA_FILE
    model: str = trainer.DEFAULTS["model"]
    # None: the model's default ImageNet weights; "none", "imagenet" or a file (models/builders).
    weights: Optional[str] = None
    serving_model_name: str = "cxr_classifier"
    epochs: int = trainer.DEFAULTS["epochs"]
    image_size: int = features.DEFAULT_IMAGE_SIZE
    batch_size: int = trainer.DEFAULTS["batch_size"]
    # None: models/trainer.py's default. Backbone layers (from the top) unfrozen for
    # fine-tuning; more than the backbone has unfreezes all of it.
    fine_tune_layers: Optional[int] = None
    label_smoothing: Optional[float] = None
    # The head's learning rate and dropout; set them to pin what a Tuner run chose.
    head_learning_rate: Optional[float] = None
    dropout: Optional[float] = None
    # Seeds the head's initial weights, shuffling and augmentation (not the split): training
    # on CPU is repeatable with one seed, so run-to-run spread is measured across seeds.
    seed: Optional[int] = None
    # How the loss weighs examples: models/trainer.py BALANCE_MODES (None: its default).
    balance: Optional[str] = None
    split_percentages: Tuple[int, int, int] = (70, 15, 15)
    # Blessing: COVID-19 misses are the costliest error, so its recall has its own floor.
    min_covid_recall: float = 0.8
    min_macro_auc: float = 0.8
    max_regression: float = 0.0
    train_steps: Optional[int] = None
    # Tuner (models/tuning.py): a random search whose best values feed Trainer; off by default.
    tune: bool = False
    tune_trials: int = 4
    tune_epochs: int = 3
    # Ingestion (components/image_example_gen): file checks and the quarantine limit.
    min_image_side: int = IngestOptions.min_image_side
    max_image_pixels: int = IngestOptions.max_image_pixels
    max_quarantined_fraction: float = IngestOptions.max_quarantined_fraction
    ignore_unknown_labels: bool = False
    # Grad-CAM report on the test split (components/grad_cam); "" targets the last conv block.
    gradcam_images_per_class: int = gradcam_defaults.IMAGES_PER_CLASS
    gradcam_all_misclassified: bool = True
    gradcam_max_misclassified: int = gradcam_defaults.MAX_MISCLASSIFIED  # 0: every one
    gradcam_target_layer: str = ""
    gradcam_overlay_alpha: float = gradcam_defaults.OVERLAY_ALPHA
    gradcam_steps: int = gradcam_defaults.STEPS
    # Beam: "direct" runs inside the orchestrator's process; "dataflow" on Google Cloud Dataflow.
    beam_runner: str = "direct"
    beam_direct_workers: int = 1
    extra_beam_args: List[str] = dataclasses.field(default_factory=list)
    # Google Cloud: the pipeline image, Dataflow workers and Vertex AI Training.
    image: Optional[str] = None
    project: Optional[str] = None
    region: str = "us-central1"
    dataflow_temp_location: Optional[str] = None  # default: <pipeline_root>/beam-temp
    dataflow_machine_type: str = "n1-standard-4"
    dataflow_max_workers: int = 4
    dataflow_service_account: Optional[str] = None  # the workers' identity; default Compute's
    dataflow_subnetwork: Optional[str] = None  # e.g. regions/REGION/subnetworks/NAME
    vertex_training: bool = False
    vertex_training_machine_type: str = "n1-standard-8"
    # Vertex AI Training (Trainer and Tuner): e.g. NVIDIA_TESLA_T4; count per replica.
    vertex_accelerator_type: Optional[str] = None
    vertex_accelerator_count: int = 1
    # Besides the TF Serving folder: upload the blessed model to the Vertex AI Model Registry
    # and deploy it to this endpoint (TFX's Vertex Pusher) with a TF prediction image.
    vertex_endpoint: Optional[str] = None
    vertex_serving_image: Optional[str] = None
    vertex_serving_machine_type: str = "n1-standard-2"

    def __post_init__(self):
        self.data_dir = _absolute(self.data_dir)
        self.output_dir = _absolute(self.output_dir)
        self.pipeline_root = _absolute(self.pipeline_root or os.path.join(
            self.output_dir, "pipelines", self.pipeline_name))
        self.serving_dir = _absolute(self.serving_dir or os.path.join(
            self.output_dir, "serving_model"))
        self.dataflow_temp_location = (self.dataflow_temp_location
                                       or os.path.join(self.pipeline_root, "beam-temp"))
        if self.model not in architectures.MODEL_NAMES:
            raise ValueError(f"unknown model {self.model!r}; choose one of "
                             f"{', '.join(architectures.MODEL_NAMES)}")
        builders.resolve_weights(self.model, self.weights)
        if self.epochs < 1:
            raise ValueError(f"epochs must be at least 1, got {self.epochs}")
        if not 32 <= self.image_size <= 1024:
            raise ValueError(f"image size must be between 32 and 1024, got {self.image_size}")
        check_split_percentages(self.split_percentages)
        for name in ("tune_trials", "tune_epochs"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        _ = self.ingest_options  # raises ValueError for bad ingestion settings
        if self.batch_size < 1:
            raise ValueError(f"batch size must be at least 1, got {self.batch_size}")
        if self.fine_tune_layers is not None and self.fine_tune_layers < 1:
            raise ValueError(f"fine_tune_layers must be at least 1, got {self.fine_tune_layers}")
        if self.label_smoothing is not None and not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.head_learning_rate is not None and not 0.0 < self.head_learning_rate < 1.0:
            raise ValueError("head_learning_rate must be in (0, 1), got "
                             f"{self.head_learning_rate}")
        if self.dropout is not None and not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.balance is not None and self.balance not in balance.MODES:
            raise ValueError(f"unknown balance {self.balance!r}; choose one of "
                             f"{', '.join(balance.MODES)}")
        for name in ("min_covid_recall", "min_macro_auc", "max_regression"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1, got {getattr(self, name)}")
        check_gradcam_parameters(self.gradcam_images_per_class, self.gradcam_overlay_alpha,
                                 self.gradcam_steps, self.gradcam_max_misclassified)
        if self.beam_runner not in BEAM_RUNNERS:
            raise ValueError(f"unknown Beam runner {self.beam_runner!r}; choose one of "
                             f"{', '.join(BEAM_RUNNERS)}")
        if self.vertex_accelerator_type and not self.vertex_training:
            raise ValueError("--vertex-accelerator-type applies to Vertex AI Training: add "
                             "--vertex-training")
        if self.vertex_endpoint:
            for name in ("project", "vertex_serving_image"):
                if not getattr(self, name):
                    raise ValueError(f"--vertex-endpoint (Model Registry upload) needs {name}: "
                                     f"pass {setting_source(name)}")
        for name in ("beam_direct_workers", "dataflow_max_workers", "vertex_accelerator_count"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        # Dataflow workers and Vertex Training jobs need this project's code: the image has it.
        if self.beam_runner == "dataflow" or self.vertex_training:
            for name in ("project", "image"):
                if not getattr(self, name):
                    raise ValueError(f"Dataflow and Vertex AI Training need {name}: "
                                     f"pass {setting_source(name)}")

    @classmethod
    def from_settings(cls, overrides: Optional[Mapping[str, Any]] = None,
                      environ: Mapping[str, str] = os.environ) -> "PipelineConfig":
        """Defaults, then CXR_* environment variables, then overrides (flags) that are not None."""
        values = settings_from_env(environ)
        values.update({k: v for k, v in (overrides or {}).items() if v is not None})
        if "data_dir" not in values:
            raise ValueError(f"no data directory: pass {setting_source('data_dir')}")
        return cls(**values)

    @property
    def metadata_path(self) -> str:
        return os.path.join(self.output_dir, "metadata", self.pipeline_name, "metadata.sqlite")

    @property
    def ingest_options(self) -> IngestOptions:
        return IngestOptions(min_image_side=self.min_image_side,
                             max_image_pixels=self.max_image_pixels,
                             max_quarantined_fraction=self.max_quarantined_fraction,
                             ignore_unknown_labels=self.ignore_unknown_labels)

    @property
    def beam_args(self) -> List[str]:
        """Arguments for every Beam-based component (ExampleGen, StatisticsGen, Transform...)."""
        if self.beam_runner == "dataflow":
            runner_args = [
                "--runner=DataflowRunner", f"--project={self.project}",
                f"--region={self.region}", f"--temp_location={self.dataflow_temp_location}",
                f"--machine_type={self.dataflow_machine_type}",
                f"--max_num_workers={self.dataflow_max_workers}",
                # Workers run the pipeline image, so they import this project's modules.
                f"--sdk_container_image={self.image}", "--experiments=use_runner_v2"]
            if self.dataflow_service_account:
                runner_args.append(f"--service_account_email={self.dataflow_service_account}")
            if self.dataflow_subnetwork:
                runner_args.append(f"--subnetwork={self.dataflow_subnetwork}")
        elif self.beam_direct_workers > 1:
            # multi_processing uses one process per worker: more cores for Transform and stats.
            runner_args = ["--direct_running_mode=multi_processing",
                           f"--direct_num_workers={self.beam_direct_workers}"]
        else:
            # Beam's defaults: the in-memory DirectRunner with one worker. Spelled out, they
            # made TFX package itself as an sdist for remote workers (a `setup.py sdist`
            # subprocess, 2.6 s) in every Beam component: TFX skips that when no args are given.
            runner_args = []
        return runner_args + list(self.extra_beam_args)

    @property
    def trainer_config(self) -> dict:
        """What models/trainer.py reads from Trainer's custom_config."""
        config = {"model": self.model, "epochs": self.epochs, "batch_size": self.batch_size,
                  "image_size": self.image_size, "weights": self.weights}
        for name in ("fine_tune_layers", "label_smoothing", "head_learning_rate", "dropout",
                     "seed", "balance"):
            if getattr(self, name) is not None:
                config[name] = getattr(self, name)
        return config

    @property
    def blessing_rule(self) -> str:
        return thresholds.blessing_rule(self.min_covid_recall, self.min_macro_auc,
                                        self.max_regression)

    @property
    def tuner_config(self) -> dict:
        """What models/tuning.py reads from Tuner's custom_config (+ Vertex keys if asked)."""
        config = {**self.trainer_config, "max_trials": self.tune_trials,
                  "trial_epochs": self.tune_epochs}
        if self.vertex_training:
            config.update({
                vertex.ENABLE_VERTEX_KEY: True,
                vertex.VERTEX_REGION_KEY: self.region,
                vertex.experimental.TUNING_ARGS_KEY: {
                    "project": self.project,
                    "job_spec": {"worker_pool_specs": self._vertex_worker_pool()},
                },
                vertex.experimental.REMOTE_TRIALS_WORKING_DIR_KEY: os.path.join(
                    self.pipeline_root, "tuner-trials"),
            })
        return config

    def _vertex_worker_pool(self) -> List[Dict[str, Any]]:
        machine = {"machine_type": self.vertex_training_machine_type}
        if self.vertex_accelerator_type:
            machine.update(accelerator_type=self.vertex_accelerator_type,
                           accelerator_count=self.vertex_accelerator_count)
        return [{
            "machine_spec": machine,
            "replica_count": 1,
            "container_spec": {"image_uri": self.image},
        }]

    @property
    def vertex_push_config(self) -> Dict[str, Any]:
        """custom_config of TFX's Vertex Pusher: upload to the Model Registry, deploy to
        the endpoint `vertex_endpoint` (created when missing)."""
        return {
            vertex.ENABLE_VERTEX_KEY: True,
            vertex.VERTEX_REGION_KEY: self.region,
            vertex.VERTEX_CONTAINER_IMAGE_URI_KEY: self.vertex_serving_image,
            vertex.SERVING_ARGS_KEY: {
                "project": self.project,
                "endpoint_name": self.vertex_endpoint,
                "machine_type": self.vertex_serving_machine_type,
            },
        }

    @property
    def vertex_training_config(self) -> Dict[str, Any]:
        """custom_config keys of TFX's Vertex Trainer: one replica of the pipeline image."""
        if not self.vertex_training:
            return {}
        return {
            vertex.ENABLE_VERTEX_KEY: True,
            vertex.VERTEX_REGION_KEY: self.region,
            vertex.TRAINING_ARGS_KEY: {
                "project": self.project,
                "worker_pool_specs": self._vertex_worker_pool(),
            },
        }


def _absolute(path: str) -> str:
    """Local paths become absolute; URIs such as gs://bucket/dir are left as they are."""
    return path if "://" in path else os.path.abspath(path)


def setting_source(name: str) -> str:
    """How a user sets a field: its flag or its environment variable."""
    return f"--{name.replace('_', '-')} or {ENV_PREFIX}{name.upper()}"


def settings_from_env(environ: Mapping[str, str] = os.environ) -> Dict[str, Any]:
    """The fields set by CXR_<FIELD> variables, parsed to each field's type."""
    values = {}
    for field in dataclasses.fields(PipelineConfig):
        name = ENV_PREFIX + field.name.upper()
        if environ.get(name, "") != "":
            values[field.name] = _parse(name, environ[name], field.type)
    return values


def _parse(name: str, text: str, field_type: Any) -> Any:
    if typing.get_origin(field_type) is typing.Union:  # Optional[X]
        field_type = next(t for t in typing.get_args(field_type) if t is not type(None))
    origin = typing.get_origin(field_type)
    try:
        if field_type is bool:
            return {"1": True, "true": True, "yes": True,
                    "0": False, "false": False, "no": False}[text.strip().lower()]
        if origin is tuple:
            item_type = typing.get_args(field_type)[0]
            return tuple(item_type(v) for v in text.split(","))
        if origin is list:
            return shlex.split(text)
        return field_type(text)
    except (KeyError, ValueError):
        kind = getattr(field_type, "__name__", str(field_type))
        raise ValueError(f"environment variable {name}={text!r} is not a valid {kind}")
