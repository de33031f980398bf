import math

import numpy as np
import pytest

from explain import faithfulness, gradcam
from explain.conftest import QUADRANT_IMAGE_SIZE, quadrant_model, sample_images


def test_border_band_and_lung_field_regions():
    border = faithfulness.border_mask(50)
    assert border.mean() == pytest.approx(1 - (40 / 50) ** 2)
    assert border[0].all() and border[:, -1].all() and not border[5:45, 5:45].any()
    lungs = faithfulness.lung_field_mask(100)
    assert np.array_equal(lungs, lungs[:, ::-1])  # one ellipse per side
    assert not lungs[:, 49:51].any()  # the mediastinum lies between them
    assert not (lungs & faithfulness.border_mask(100)).any()
    a, b = faithfulness.LUNG_SEMI_AXES
    assert lungs.mean() == pytest.approx(2 * math.pi * a * b, abs=0.01)


def test_mass_share_and_rank_correlation():
    heatmap = np.zeros((10, 10))
    heatmap[0, :] = 1.0
    heatmap[5, 5] = 3.0
    assert faithfulness.mass_share(heatmap, faithfulness.border_mask(10)) == pytest.approx(10 / 13)
    assert math.isnan(faithfulness.mass_share(np.zeros((10, 10)), faithfulness.border_mask(10)))
    ramp = np.arange(100.0).reshape(10, 10)
    assert faithfulness.rank_correlation(ramp, ramp ** 3) == pytest.approx(1.0)
    assert faithfulness.rank_correlation(ramp, -ramp) == pytest.approx(-1.0)
    assert math.isnan(faithfulness.rank_correlation(ramp, np.ones((10, 10))))


def test_block_order_moves_whole_blocks_from_the_most_salient_down():
    heatmap = np.kron(np.array([[2.0, 0.0], [1.0, 3.0]]), np.ones((3, 3)))
    np.testing.assert_allclose(faithfulness.block_means(heatmap, 2), [[2.0, 0.0], [1.0, 3.0]])
    order = faithfulness.block_order(faithfulness.block_means(heatmap, 2), 6,
                                     np.random.default_rng(0))
    assert sorted(order) == list(range(36))
    assert [set(heatmap.ravel()[order[i:i + 9]]) for i in range(0, 36, 9)] == [
        {3.0}, {2.0}, {1.0}, {0.0}]


def test_deleting_the_salient_quadrant_drops_the_probability_faster_than_random_order():
    _, _, _, images = sample_images(per_class=1, image_size=QUADRANT_IMAGE_SIZE)
    model = quadrant_model("top_left")
    cam = gradcam.GradCam(model)
    explanation = cam.explain(images)
    for image, heatmap in zip(images, explanation.heatmaps):
        curves = faithfulness.deletion_insertion(cam.predict, image, heatmap, class_id=0,
                                                 steps=8)
        original, black = cam.predict(np.stack([image, np.zeros_like(image)]))[:, 0]
        assert curves.deletion[0] == pytest.approx(original, abs=1e-6)
        assert curves.deletion[-1] == pytest.approx(black, abs=1e-6)
        assert curves.insertion[-1] == pytest.approx(original, abs=1e-6)
        aucs = curves.aucs()
        assert all(0.0 <= value <= 1.0 for value in aucs.values())
        # A quarter of the pixels carries the whole decision: removing the most salient
        # quarter first (2 of 8 steps) must take away nearly all of what the image added.
        assert curves.deletion[2] - black < 0.1 * (original - black)
        assert aucs["deletion_auc"] < aucs["random_deletion_auc"] - 0.05


def test_curves_predict_their_shared_end_images_once_and_equal_the_full_walks():
    rng = np.random.default_rng(3)
    image, heatmap = rng.random((32, 32, 3)), rng.random((32, 32))
    calls = []

    def predict(batch):  # a deterministic stand-in for a model: depends on every pixel
        calls.append(len(batch))
        weights = np.linspace(0.0, 1.0, 32 * 32 * 3)
        score = batch.reshape(len(batch), -1) @ weights / weights.sum()
        return np.stack([score, 1.0 - score], axis=1)

    steps = 6
    curves = faithfulness.deletion_insertion(predict, image, heatmap, class_id=0, steps=steps,
                                             seed=5)
    assert calls == [4 * (steps - 1) + 3]
    # The reference: every frame of every walk predicted, as the curves are defined.
    generator = np.random.default_rng(5)
    black = np.zeros_like(image)
    blurred = faithfulness.ndimage.gaussian_filter(
        image, sigma=(faithfulness.INSERTION_BLUR_SIGMA * 32,) * 2 + (0,))
    salient = faithfulness.block_order(faithfulness.block_means(heatmap, 16), 32, generator)
    shuffled = faithfulness.block_order(generator.random((16, 16)), 32, generator)
    for values, (start, source, order) in zip(
            (curves.deletion, curves.insertion, curves.random_deletion, curves.random_insertion),
            ((image, black, salient), (blurred, image, salient), (image, black, shuffled),
             (blurred, image, shuffled))):
        np.testing.assert_allclose(
            values, predict(faithfulness._reveal(start, source, order, steps))[:, 0], atol=1e-12)
