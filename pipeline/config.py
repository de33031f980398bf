"""One configuration object for every engine; runners and the CLI only fill it in."""
import dataclasses
import os
from typing import List, Optional, Tuple

from components.image_example_gen.component import check_split_percentages
from models import builders, features

DEFAULT_BEAM_ARGS = ("--direct_running_mode=in_memory", "--direct_num_workers=1")


@dataclasses.dataclass
class PipelineConfig:
    data_dir: str
    output_dir: str = "outputs"
    pipeline_name: str = "cxr"
    model: str = "mobilenet_v2"
    serving_model_name: str = "cxr_classifier"
    epochs: int = 10
    image_size: int = features.DEFAULT_IMAGE_SIZE
    batch_size: int = 16
    split_percentages: Tuple[int, int, int] = (70, 15, 15)
    # Blessing: COVID-19 misses are the costliest error, so its recall has its own floor.
    min_covid_recall: float = 0.8
    min_macro_auc: float = 0.8
    max_regression: float = 0.0
    train_steps: Optional[int] = None
    beam_args: List[str] = dataclasses.field(default_factory=lambda: list(DEFAULT_BEAM_ARGS))

    def __post_init__(self):
        self.data_dir = os.path.abspath(self.data_dir)
        self.output_dir = os.path.abspath(self.output_dir)
        if self.model not in builders.MODEL_NAMES:
            raise ValueError(f"unknown model {self.model!r}; choose one of "
                             f"{', '.join(builders.MODEL_NAMES)}")
        if self.epochs < 1:
            raise ValueError(f"epochs must be at least 1, got {self.epochs}")
        if not 32 <= self.image_size <= 1024:
            raise ValueError(f"image size must be between 32 and 1024, got {self.image_size}")
        check_split_percentages(self.split_percentages)
        if self.batch_size < 1:
            raise ValueError(f"batch size must be at least 1, got {self.batch_size}")
        for name in ("min_covid_recall", "min_macro_auc", "max_regression"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1, got {getattr(self, name)}")

    @property
    def pipeline_root(self) -> str:
        return os.path.join(self.output_dir, "pipelines", self.pipeline_name)

    @property
    def metadata_path(self) -> str:
        return os.path.join(self.output_dir, "metadata", self.pipeline_name, "metadata.sqlite")

    @property
    def serving_dir(self) -> str:
        return os.path.join(self.output_dir, "serving_model")

    @property
    def trainer_config(self) -> dict:
        """What models/trainer.py reads from Trainer's custom_config."""
        return {"model": self.model, "epochs": self.epochs, "batch_size": self.batch_size,
                "image_size": self.image_size}
