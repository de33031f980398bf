import numpy as np
import pytest
import tensorflow as tf

from explain import faithfulness, gradcam
from explain.conftest import (QUADRANT_IMAGE_SIZE, last_relu_name, quadrant_model,
                                          sample_images)
from models import builders


def _quadrant_mask(quadrant: str) -> np.ndarray:
    half = QUADRANT_IMAGE_SIZE // 2
    mask = np.zeros((QUADRANT_IMAGE_SIZE, QUADRANT_IMAGE_SIZE), dtype=bool)
    rows, cols = {"top_left": (slice(0, half), slice(0, half)),
                  "bottom_right": (slice(half, None), slice(half, None))}[quadrant]
    mask[rows, cols] = True
    return mask


@pytest.mark.parametrize("quadrant", ["top_left", "bottom_right"])
def test_model_that_sees_one_quadrant_gets_its_heatmap_there(quadrant):
    _, _, _, images = sample_images(per_class=1, image_size=QUADRANT_IMAGE_SIZE)
    cam = gradcam.GradCam(quadrant_model(quadrant))
    assert cam.target.qualified_name == "features"
    explanation = cam.explain(images)
    assert explanation.class_ids.tolist() == [0, 0, 0]
    for heatmap in explanation.heatmaps:
        # The 3x3 convolution reaches one pixel over the quadrant's edge, nothing further.
        assert faithfulness.mass_share(heatmap, _quadrant_mask(quadrant)) > 0.9


class _AttachedLayer(tf.keras.layers.Layer):
    def __init__(self, table):
        super().__init__()
        self.table = table

    def call(self, inputs):
        raise NotImplementedError("not part of the model's graph")


def test_target_layer_is_the_last_conv_block_also_inside_a_nested_backbone(mobilenet):
    baseline = builders.build("baseline_cnn", 48)
    assert gradcam.find_target_layer(baseline).qualified_name == last_relu_name(baseline)
    target = gradcam.find_target_layer(mobilenet)
    assert target.qualified_name == f"{builders.BACKBONE_NAME}/out_relu"
    images = np.random.default_rng(0).random((2, 64, 64, 3), dtype=np.float32)
    # The Trainer attaches its transform layer to the exported model, outside the graph; like
    # this one, it can be neither called on images nor rebuilt from a config.
    mobilenet.attached_layer = _AttachedLayer(table={"a": 1})
    explanation = gradcam.GradCam(mobilenet, target).explain(images)
    random_copy = gradcam.randomized_copy(mobilenet)
    assert [layer.name for layer in random_copy.layers] == [
        layer.name for layer in mobilenet.layers if layer is not mobilenet.attached_layer]
    np.testing.assert_allclose(explanation.probabilities, mobilenet(images, training=False),
                               rtol=1e-4, atol=1e-6)
    assert explanation.heatmaps.shape == (2, 64, 64)
    assert explanation.heatmaps.max() == pytest.approx(1.0)


def test_target_layer_by_name_and_clear_errors(mobilenet):
    named = gradcam.find_target_layer(mobilenet, "backbone/block_13_expand_relu")
    assert named == gradcam.TargetLayer((builders.BACKBONE_NAME,), "block_13_expand_relu")
    assert gradcam.find_target_layer(mobilenet, "block_13_expand_relu") == named
    with pytest.raises(gradcam.GradCamError, match="no layer named 'nope'"):
        gradcam.find_target_layer(mobilenet, "nope")
    with pytest.raises(gradcam.GradCamError, match="Grad-CAM needs a"):
        gradcam.find_target_layer(mobilenet, "probabilities")


def test_heatmaps_depend_on_learned_weights(trained_baseline):
    """Model-randomisation sanity check (Adebayo et al., 2018)."""
    _, _, _, images = sample_images(per_class=4, image_size=48)
    cam = gradcam.GradCam(trained_baseline)
    trained = cam.explain(images)
    randomized = gradcam.GradCam(gradcam.randomized_copy(trained_baseline), cam.target).explain(
        images, trained.class_ids)
    correlations = [faithfulness.rank_correlation(a, b)
                    for a, b in zip(trained.signed_maps, randomized.signed_maps)]
    print("rank correlations trained vs re-initialised:", np.round(correlations, 3))
    assert np.mean(correlations) < 0.5
    same = cam.explain(images, trained.class_ids)
    assert all(faithfulness.rank_correlation(a, b) > 0.999
               for a, b in zip(trained.signed_maps, same.signed_maps))
