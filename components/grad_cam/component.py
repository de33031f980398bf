"""GradCam: explains the trained model on the test split with Grad-CAM heatmaps and measures
how faithful they are (deletion/insertion), where they look (border band, lung field) and
whether they depend on the learned weights (randomisation check).

Its output is a GradCamReport folder: report.html (opens from disk), summary.json,
overlays/*.png and grid_<class>.png.
"""
from typing import Optional

from tfx import types
from tfx.dsl.components.base import base_component, executor_spec
from tfx.types import standard_artifacts
from tfx.types.component_spec import ChannelParameter, ComponentSpec, ExecutionParameter

from components import code_digest
from components.grad_cam import executor
from explain import gradcam_defaults, gradcam_report


def check_parameters(images_per_class: int, overlay_alpha: float, faithfulness_steps: int,
                     max_misclassified: int = gradcam_defaults.MAX_MISCLASSIFIED) -> None:
    """ValueError naming the first bad parameter; PipelineConfig checks with it too."""
    if images_per_class < 1:
        raise ValueError(f"images per class must be at least 1, got {images_per_class}")
    if max_misclassified < 0:
        raise ValueError(f"max misclassified must be 0 (no cap) or more, got {max_misclassified}")
    gradcam_report.Options(overlay_alpha=overlay_alpha, steps=faithfulness_steps)


class GradCamReport(types.Artifact):
    """Folder with report.html, summary.json, overlays/ and one grid image per class."""
    TYPE_NAME = "cxr.GradCamReport"  # KFP v2 (Vertex AI) needs namespace.Name


class GradCamSpec(ComponentSpec):
    PARAMETERS = {
        executor.IMAGES_PER_CLASS_KEY: ExecutionParameter(type=int),
        executor.ALL_MISCLASSIFIED_KEY: ExecutionParameter(type=bool),
        executor.MAX_MISCLASSIFIED_KEY: ExecutionParameter(type=int),
        executor.TARGET_LAYER_KEY: ExecutionParameter(type=str),
        executor.OVERLAY_ALPHA_KEY: ExecutionParameter(type=float),
        executor.STEPS_KEY: ExecutionParameter(type=int),
        executor.SPLIT_KEY: ExecutionParameter(type=str),
        code_digest.CODE_SHA256_KEY: ExecutionParameter(type=str),
    }
    INPUTS = {
        executor.MODEL_KEY: ChannelParameter(type=standard_artifacts.Model),
        executor.EXAMPLES_KEY: ChannelParameter(type=standard_artifacts.Examples),
        executor.BLESSING_KEY: ChannelParameter(type=standard_artifacts.ModelBlessing,
                                                optional=True),
    }
    OUTPUTS = {executor.REPORT_KEY: ChannelParameter(type=GradCamReport)}


class GradCam(base_component.BaseComponent):
    """Grad-CAM report of `model` on one split of `examples` (see module docstring).

    images_per_class: most confident correct predictions shown per true class.
    include_all_misclassified: every mistake of the split up to max_misclassified, or at most
        images_per_class per class.
    max_misclassified: cap on the mistakes explained in total, most confident first and shared
        across classes; 0 explains every one. The report says how many of how many.
    target_layer: layer name ('out_relu' or 'backbone/out_relu'); empty: the last conv feature map.
    overlay_alpha: weight of the heatmap over the image in the overlays.
    faithfulness_steps: steps of the deletion/insertion curves (one forward pass each).
    """
    SPEC_CLASS = GradCamSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)

    def __init__(self, model: types.BaseChannel, examples: types.BaseChannel,
                 model_blessing: Optional[types.BaseChannel] = None,
                 images_per_class: int = gradcam_defaults.IMAGES_PER_CLASS,
                 include_all_misclassified: bool = True,
                 max_misclassified: int = gradcam_defaults.MAX_MISCLASSIFIED,
                 target_layer: str = "",
                 overlay_alpha: float = gradcam_defaults.OVERLAY_ALPHA,
                 faithfulness_steps: int = gradcam_defaults.STEPS, split: str = "test"):
        check_parameters(images_per_class, overlay_alpha, faithfulness_steps, max_misclassified)
        super().__init__(spec=GradCamSpec(
            model=model, examples=examples, model_blessing=model_blessing,
            images_per_class=images_per_class, include_all_misclassified=include_all_misclassified,
            max_misclassified=max_misclassified,
            target_layer=target_layer, overlay_alpha=overlay_alpha,
            faithfulness_steps=faithfulness_steps, split=split,
            code_sha256=code_digest.component_sha256("grad_cam"),
            report=types.Channel(type=GradCamReport)))
