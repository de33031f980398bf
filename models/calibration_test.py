import numpy as np
import pytest
import tensorflow as tf

from models import builders, calibration, features


def test_fit_temperature_recovers_the_temperature_the_labels_were_drawn_at():
    rng = np.random.default_rng(0)
    logits = rng.normal(scale=3.0, size=(20000, features.NUM_CLASSES))
    true_probabilities = calibration.apply_temperature(np.exp(logits), 2.0)
    labels = np.array([rng.choice(features.NUM_CLASSES, p=p) for p in true_probabilities])
    overconfident = calibration.apply_temperature(np.exp(logits), 1.0)
    temperature = calibration.fit_temperature(labels, overconfident)
    assert temperature == pytest.approx(2.0, abs=0.1)
    assert calibration.negative_log_likelihood(
        labels, calibration.apply_temperature(overconfident, temperature)) < \
        calibration.negative_log_likelihood(labels, overconfident)


def test_temperature_never_changes_the_predicted_class():
    probabilities = np.random.default_rng(1).dirichlet(np.ones(3), size=200)
    for temperature in (0.3, 1.0, 4.0):
        scaled = calibration.apply_temperature(probabilities, temperature)
        np.testing.assert_array_equal(scaled.argmax(1), probabilities.argmax(1))
        np.testing.assert_allclose(scaled.sum(1), 1.0)


def test_folding_divides_the_models_logits_by_the_temperature():
    model = builders.build("baseline_cnn", image_size=32)
    images = tf.random.uniform((4, 32, 32, 3), seed=0)
    before = model(images, training=False).numpy()
    calibration.fold_temperature(model, 2.5)
    after = model(images, training=False).numpy()
    np.testing.assert_allclose(after, calibration.apply_temperature(before, 2.5), atol=1e-5)


def test_a_head_without_softmax_is_refused():
    inputs = tf.keras.Input((4,))
    model = tf.keras.Model(inputs, tf.keras.layers.Dense(
        3, name=features.PROBABILITIES_OUTPUT)(inputs))
    with pytest.raises(ValueError, match="not a softmax Dense layer"):
        calibration.fold_temperature(model, 2.0)


def test_an_empty_split_is_a_clear_error():
    with pytest.raises(ValueError, match="empty split"):
        calibration.fit_temperature(np.zeros(0, int), np.zeros((0, 3)))
