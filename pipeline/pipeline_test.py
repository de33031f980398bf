"""create_pipeline's wiring, checked on the built pipeline object without running it."""
import json

from components import code_digest
from pipeline.config import PipelineConfig
from pipeline.pipeline import PREPROCESSING_FN, RUN_FN, TUNER_FN, create_pipeline


def test_model_code_digest_is_in_the_cache_key_of_every_step_running_models(tmp_path):
    """Transform, Tuner and Trainer name models/ by module path, which TFX does not hash:
    without the digest an edited trainer.py would hand back the cached model."""
    pipeline = create_pipeline(PipelineConfig(data_dir=str(tmp_path), tune=True))
    nodes = {node.id: node for node in pipeline.components}
    for node_id, function in (("Transform", PREPROCESSING_FN), ("Tuner", TUNER_FN),
                              ("Trainer", RUN_FN)):
        custom_config = json.loads(nodes[node_id].exec_properties["custom_config"])
        assert custom_config[code_digest.CODE_SHA256_KEY] == \
            code_digest.module_sha256(code_digest.function_module(function)), node_id


def test_custom_components_carry_the_digest_of_their_own_code(tmp_path):
    pipeline = create_pipeline(PipelineConfig(data_dir=str(tmp_path)))
    nodes = {node.id: node for node in pipeline.components}
    for node_id, package in (("GradCam", "grad_cam"), ("ModelCardGenerator", "model_card"),
                             ("Pusher", "serving_pusher")):
        assert nodes[node_id].exec_properties[code_digest.CODE_SHA256_KEY] == \
            code_digest.component_sha256(package), node_id
    assert code_digest.component_sha256("image_example_gen") in \
        nodes["ImageExampleGen"].exec_properties["custom_config"]
