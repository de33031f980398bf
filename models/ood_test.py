"""The chest X-ray gate on features with a known answer, and inside small Keras models."""
import numpy as np
import pytest
import tensorflow as tf

from models import builders, features, ood


def _films(count: int, seed: int, shift: float = 0.0, width: int = 64) -> np.ndarray:
    """Non-negative 'pooled features' with a few strong directions, like pooled ReLUs."""
    rng = np.random.default_rng(seed)
    basis = np.random.default_rng(99 + width).normal(size=(6, width))
    return np.maximum(rng.normal(size=(count, 6)) @ basis * 0.3 + 1.0 + shift
                      + rng.normal(scale=0.05, size=(count, width)), 0.0)


def _layers(count: int, seed: int, shift=(0.0, 0.0)):
    """[penultimate, mid-level] features of `count` images."""
    return [_films(count, seed, shift[0], 64), _films(count, seed + 50, shift[1], 32)]


def test_threshold_flags_at_most_two_percent_of_eval():
    assert ood.threshold_for(np.arange(100.0)) == 97.0  # 2 of 100 beyond it
    assert ood.threshold_for(np.arange(49.0)) == 48.0   # 2% of 49 is below one film
    assert ood.threshold_for(np.array([3.0])) == 3.0
    gate = ood.fit(_layers(300, 0), _layers(250, 1))
    summary = gate.summary()
    assert summary["eval_flagged"] <= ood.MAX_FLAGGED_EVAL and summary["eval_images"] == 250
    assert summary["components"] == [32, 31] and summary["dimensions"] == [64, 32]


def test_films_pass_and_inputs_unlike_them_in_either_layer_are_flagged():
    gate = ood.fit(_layers(300, 0), _layers(250, 1))
    held_out = gate.distances(_layers(500, 2)) <= gate.threshold
    assert 0.95 <= held_out.mean()
    rng = np.random.default_rng(3)
    others = {"penultimate shifted": _layers(50, 4, shift=(1.5, 0.0)),
              "mid-level shifted": _layers(50, 5, shift=(0.0, 1.5)),
              "noise": [rng.uniform(0, 3, size=(50, 64)), rng.uniform(0, 3, size=(50, 32))],
              "blank": [np.zeros((1, 64)), np.zeros((1, 32))]}
    for name, values in others.items():
        assert (gate.distances(values) > gate.threshold).all(), name
        assert (gate.scores(values) < ood.MAX_FLAGGED_EVAL).all(), name
    scores = gate.scores(_layers(500, 2))
    assert 0.0 <= scores.min() and scores.max() <= 1.0 and np.median(scores) > 0.3


def test_the_graph_gives_the_fitted_numbers():
    gate = ood.fit(_layers(300, 0), _layers(250, 1))
    values = [np.concatenate([a, b]) for a, b in zip(_layers(20, 5), _layers(5, 6, (2.0, 0)))]
    outputs = ood.GateModule(gate)([tf.constant(v, tf.float32) for v in values])
    np.testing.assert_allclose(outputs[features.CHEST_XRAY_SCORE_OUTPUT].numpy(),
                               gate.scores(values), atol=1e-3)  # float32 graph
    np.testing.assert_array_equal(outputs[features.IS_CHEST_XRAY_OUTPUT].numpy(),
                                  gate.distances(values) <= gate.threshold)
    assert outputs[features.IS_CHEST_XRAY_OUTPUT].dtype == tf.bool


def test_too_few_images_is_a_plain_error():
    with pytest.raises(ValueError, match="at least 2 training and 1 eval image, got 1 and 0"):
        ood.fit(_layers(1, 0), _layers(0, 1))


def test_fewer_images_than_components_still_fit():
    gate = ood.fit(_layers(5, 0), _layers(3, 1))
    assert [layer.variances.size for layer in gate.layers] == [4, 4]
    assert np.isfinite(gate.threshold)


@pytest.mark.parametrize("name, mid_level", [("baseline_cnn", "max_pooling2d_2"),
                                             ("mobilenet_v2", "block_13_expand_relu")])
def test_one_pass_gives_the_probabilities_and_both_watched_layers(name, mid_level):
    tf.keras.utils.set_random_seed(0)
    model = builders.build(name, image_size=64)
    assert ood.mid_level_layer(model).name.startswith(mid_level.rsplit("_", 1)[0])
    images = tf.random.uniform([4, 64, 64, 3])
    probabilities, penultimate, mid = ood.feature_model(model)(images, training=False)
    np.testing.assert_allclose(probabilities, model(images, training=False), atol=1e-6)
    assert penultimate.shape == (4, ood.penultimate_layer(model).input.shape[-1])
    assert mid.shape == (4, ood.mid_level_layer(model).output_shape[-1])
    dataset = tf.data.Dataset.from_tensor_slices((images, tf.zeros(4))).batch(3)
    pooled = ood.pooled_features(model, dataset)
    # The traced pass may order float sums differently from the eager call above.
    np.testing.assert_allclose(pooled[0], penultimate, atol=1e-4)
    np.testing.assert_allclose(pooled[1], mid, atol=1e-4)
    gate = ood.fit_model(model, dataset, dataset)
    assert gate.layer_names == ("probabilities input", ood.mid_level_layer(model).name)


def test_the_score_is_the_share_of_eval_films_further_away_without_steps():
    eval_distances = np.array([1.0, 2.0, 4.0, 8.0])
    distances, levels = ood.score_curve(eval_distances)
    at = lambda d: float(np.interp(d, distances, levels))  # noqa: E731
    assert (at(0.0), at(1.0), at(2.0), at(8.0), at(20.0)) == (1.0, 0.75, 0.5, 0.0, 0.0)
    assert at(3.0) == 0.375  # halfway between two eval films
    # An input at an eval film's own distance: float noise moves the score by as little.
    assert abs(at(4.0 + 1e-6) - at(4.0 - 1e-6)) < 1e-6
    module = ood.GateModule(ood.GateFit(layers=(), threshold=4.0,
                                        eval_distances=eval_distances))
    graph = module._interpolate(tf.constant([0.0, 1.0, 3.0, 4.0, 20.0])).numpy()
    np.testing.assert_allclose(graph, [1.0, 0.75, 0.375, 0.25, 0.0], atol=1e-6)

