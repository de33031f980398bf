import numpy as np
import pytest
import tensorflow as tf

from models import calibration, trainer


def _dataset(seed: int, count: int, size: int, repeat: bool) -> tf.data.Dataset:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, count)
    # The class is visible: a brighter image for a higher class id, plus noise.
    images = np.clip(labels[:, None, None, None] / 3 + rng.normal(0, 0.2, (count, size, size, 3)),
                     0, 1).astype(np.float32)
    dataset = tf.data.Dataset.from_tensor_slices((images, labels)).batch(8)
    return dataset.repeat() if repeat else dataset


def test_the_model_is_left_at_its_best_eval_epoch_across_both_phases():
    """A fine-tuning learning rate far too high makes the last epochs the worst ones."""
    config = dict(trainer.DEFAULTS, model="mobilenet_v2", image_size=32, epochs=5,
                  fine_tune_learning_rate=3.0, fine_tune_layers=200,
                  early_stopping_patience=10)
    tf.keras.utils.set_random_seed(0)
    model = trainer.build_model(config)
    validation = _dataset(1, 32, 32, repeat=False)
    best = trainer.fit_two_phases(model, config, _dataset(0, 48, 32, repeat=True), validation,
                                  steps_per_epoch=6, verbose=0)

    assert len(best.losses) == 5
    assert best.best == min(best.losses)
    assert best.best_epoch < 4 and best.losses[-1] > best.best
    restored_loss = model.evaluate(validation, verbose=0)[0]
    np.testing.assert_allclose(restored_loss, best.best, rtol=1e-4)


def test_early_stopping_counts_patience_within_a_phase():
    config = dict(trainer.DEFAULTS, model="mobilenet_v2", image_size=32, epochs=10,
                  fine_tune_learning_rate=3.0, fine_tune_layers=200,
                  early_stopping_patience=1)
    tf.keras.utils.set_random_seed(0)
    model = trainer.build_model(config)
    best = trainer.fit_two_phases(model, config, _dataset(0, 48, 32, repeat=True),
                                  _dataset(1, 32, 32, repeat=False), steps_per_epoch=6,
                                  verbose=0)
    # 4 head epochs at most, then fine-tuning stops one epoch after its loss first rises.
    assert len(best.losses) < 10


def test_calibrate_folds_the_eval_temperature_and_reports_it():
    config = dict(trainer.DEFAULTS, model="baseline_cnn", image_size=32, epochs=2)
    tf.keras.utils.set_random_seed(0)
    model = trainer.build_model(config)
    validation = _dataset(1, 32, 32, repeat=False)
    trainer.fit_two_phases(model, config, _dataset(0, 48, 32, repeat=True), validation,
                           steps_per_epoch=6, verbose=0)
    labels, before = trainer.predict_dataset(model, validation)
    summary = trainer.calibrate(model, validation)
    _, after = trainer.predict_dataset(model, validation)
    assert summary["eval_images"] == 32
    assert summary["eval_nll_after"] <= summary["eval_nll_before"] + 1e-9
    np.testing.assert_allclose(
        after, calibration.apply_temperature(before, summary["temperature"]), atol=1e-4)
    assert summary["eval_nll_after"] == pytest.approx(calibration.negative_log_likelihood(
        labels, calibration.apply_temperature(before, summary["temperature"])), rel=1e-6)
