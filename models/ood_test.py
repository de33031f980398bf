"""The chest X-ray gate on features with a known answer, and inside a small Keras model."""
import numpy as np
import pytest
import tensorflow as tf

from models import builders, features, ood


def _films(count: int, seed: int, shift: float = 0.0) -> np.ndarray:
    """Non-negative 'penultimate features' with a few strong directions, like pooled ReLUs."""
    rng = np.random.default_rng(seed)
    basis = np.random.default_rng(99).normal(size=(6, 64))
    return np.maximum(rng.normal(size=(count, 6)) @ basis * 0.3 + 1.0 + shift
                      + rng.normal(scale=0.05, size=(count, 64)), 0.0)


def test_threshold_flags_at_most_two_percent_of_eval():
    assert ood.threshold_for(np.arange(100.0)) == 97.0  # 2 of 100 beyond it
    assert ood.threshold_for(np.arange(49.0)) == 48.0   # 2% of 49 is below one film
    assert ood.threshold_for(np.array([3.0])) == 3.0
    gate = ood.fit(_films(300, 0), _films(250, 1))
    assert gate.summary()["eval_flagged"] <= ood.MAX_FLAGGED_EVAL
    assert gate.summary()["eval_images"] == 250 and gate.summary()["components"] == 32


def test_films_pass_and_other_inputs_are_flagged():
    gate = ood.fit(_films(300, 0), _films(250, 1))
    held_out = gate.distances(_films(500, 2)) <= gate.threshold
    assert 0.95 <= held_out.mean()
    rng = np.random.default_rng(3)
    others = {"shifted": _films(50, 4, shift=1.5),
              "noise": rng.uniform(0, 3, size=(50, 64)),
              "blank": np.zeros((1, 64))}
    for name, values in others.items():
        assert (gate.distances(values) > gate.threshold).all(), name
        assert (gate.scores(values) < ood.MAX_FLAGGED_EVAL).all(), name
    scores = gate.scores(_films(500, 2))
    assert 0.0 <= scores.min() and scores.max() <= 1.0 and np.median(scores) > 0.3


def test_the_graph_gives_the_fitted_numbers():
    gate = ood.fit(_films(300, 0), _films(250, 1))
    module = ood.GateModule(gate)
    values = np.concatenate([_films(20, 5), _films(5, 6, shift=2.0)])
    outputs = module(tf.constant(values, tf.float32))
    np.testing.assert_allclose(outputs[features.CHEST_XRAY_SCORE_OUTPUT].numpy(),
                               gate.scores(values), atol=0.01)
    np.testing.assert_array_equal(outputs[features.IS_CHEST_XRAY_OUTPUT].numpy(),
                                  gate.distances(values) <= gate.threshold)
    assert outputs[features.IS_CHEST_XRAY_OUTPUT].dtype == tf.bool


def test_too_few_images_is_a_plain_error():
    with pytest.raises(ValueError, match="at least 2 training and 1 eval image, got 1 and 0"):
        ood.fit(_films(1, 0), _films(0, 1))


def test_fewer_images_than_components_still_fit():
    gate = ood.fit(_films(5, 0), _films(3, 1))
    assert gate.variances.size == 4 and np.isfinite(gate.threshold)


def test_features_come_from_the_layer_under_the_probabilities():
    tf.keras.utils.set_random_seed(0)
    model = builders.build_baseline_cnn(image_size=32)
    images = tf.random.uniform([4, 32, 32, 3])
    both = ood.with_features(model)
    probabilities, penultimate = both(images, training=False)
    np.testing.assert_allclose(probabilities, model(images, training=False), atol=1e-6)
    assert penultimate.shape == (4, ood.penultimate_layer(model).input.shape[-1])
    dataset = tf.data.Dataset.from_tensor_slices((images, tf.zeros(4))).batch(3)
    np.testing.assert_allclose(ood.penultimate_features(model, dataset), penultimate,
                               atol=1e-5)
