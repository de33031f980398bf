import numpy as np
import pytest
import tensorflow as tf

from models import balance, calibration, features, trainer


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


def test_training_config_layers_defaults_custom_config_and_tuned_values():
    import keras_tuner

    assert trainer.training_config({}) == trainer.DEFAULTS
    assert trainer.training_config(None) == trainer.DEFAULTS
    tuned = keras_tuner.HyperParameters()
    tuned.Fixed("dropout", 0.4)
    tuned.Fixed("head_learning_rate", 3e-4)
    config = trainer.training_config(
        {"model": "baseline_cnn", "epochs": 3, "dropout": 0.1, "batch_size": None},
        tuned.get_config())
    # custom_config wins over the defaults, a None setting keeps the default, and the
    # Tuner's values win over both.
    assert config["model"] == "baseline_cnn" and config["epochs"] == 3
    assert config["batch_size"] == trainer.DEFAULTS["batch_size"] == 16
    assert config["dropout"] == 0.4 and config["head_learning_rate"] == 3e-4
    assert config["fine_tune_learning_rate"] == trainer.DEFAULTS["fine_tune_learning_rate"]
    assert trainer.DEFAULTS["dropout"] == 0.3  # the defaults are copied, not changed


@pytest.mark.parametrize("model_name, epochs, expected", [
    ("mobilenet_v2", 16, (6, 10)),   # round(6.4)
    ("mobilenet_v2", 5, (2, 3)),
    ("efficientnet_lite0", 3, (1, 2)),
    ("resnet50", 2, (1, 1)),
    ("mobilenet_v2", 1, (1, 0)),     # at least one head epoch, no fine-tuning left
    ("baseline_cnn", 16, (16, 0)),   # no backbone: every epoch trains the whole model
    ("baseline_cnn", 0, (0, 0)),
])
def test_phase_epochs_splits_about_40_percent_to_the_head(model_name, epochs, expected):
    head, fine_tune = trainer.phase_epochs(model_name, epochs)
    assert (head, fine_tune) == expected
    assert head + fine_tune == epochs


def test_class_weights_give_each_class_the_same_total_weight():
    weights = trainer.class_weights(np.array([10, 20, 30]))
    assert weights == pytest.approx({0: 2.0, 1: 1.0, 2: 60 / 90})
    assert [weights[i] * c for i, c in enumerate([10, 20, 30])] == pytest.approx([20.0] * 3)


def test_class_weights_of_an_empty_class_are_zero_not_infinite():
    assert trainer.class_weights(np.array([0, 10, 30])) == pytest.approx(
        {0: 0.0, 1: 40 / 30, 2: 40 / 90})
    assert trainer.class_weights(np.zeros(3, dtype=np.int64)) == {0: 0.0, 1: 0.0, 2: 0.0}


def test_group_weight_lookup_gives_each_example_its_label_and_source_weight():
    lookup = trainer.group_weight_lookup({("COVID-19", "cohen"): 0.5, ("Normal", "nih"): 2.0})
    weights = lookup(tf.constant([[b"Normal"], [b"COVID-19"], [b"COVID-19"]]),
                     tf.constant([[b"nih"], [b"cohen"], [b"nih"]]))
    # A (label, source) pair the training split did not have keeps weight 1.
    assert weights.numpy().tolist() == [2.0, 0.5, 1.0]


def test_class_balance_through_example_weights_trains_exactly_as_keras_class_weight():
    """The default balance now reaches Keras as per-example weights: same training."""
    rng = np.random.default_rng(0)
    images = rng.random((48, 4)).astype(np.float32)
    labels = rng.integers(0, 3, 48)
    sources = np.where(rng.random(48) < 0.5, b"a", b"b")
    names = np.array(features.CLASS_NAMES, dtype=object)[labels].astype(bytes)
    groups = {}
    for name, source in zip(names, sources):
        groups[(name.decode(), source.decode())] = groups.get((name.decode(),
                                                               source.decode()), 0) + 1
    lookup = trainer.group_weight_lookup(balance.group_weights(groups, balance.CLASS))

    def fit(dataset, **kwargs):
        tf.keras.utils.set_random_seed(0)
        model = tf.keras.Sequential([tf.keras.Input((4,)),
                                     tf.keras.layers.Dense(3, activation="softmax")])
        model.compile("adam", "sparse_categorical_crossentropy")
        model.fit(dataset, epochs=3, verbose=0, **kwargs)
        return model.get_weights()[0]

    plain = tf.data.Dataset.from_tensor_slices((images, labels)).batch(8)
    weighted = tf.data.Dataset.from_tensor_slices((images, labels, names, sources)).batch(8).map(
        lambda x, y, name, source: (x, y, lookup(name, source)))
    expected = fit(plain, class_weight=trainer.class_weights(np.bincount(labels, minlength=3)))
    np.testing.assert_array_equal(fit(weighted), expected)


def test_group_counts_read_label_and_source_of_every_example(tiny_pipeline):
    files = [f"{tiny_pipeline.first.examples_uri}/Split-train/*"]
    counts = trainer.group_counts(files)
    records = sum(1 for _ in tf.data.TFRecordDataset(tf.io.gfile.glob(files[0]),
                                                     compression_type="GZIP"))
    assert sum(counts.values()) == records
    assert {label for label, _ in counts} <= set(features.CLASS_NAMES)
    assert trainer.class_totals(counts).sum() == records


@pytest.mark.parametrize("counts, batch_size, cap, expected", [
    ([10, 10, 13], 16, None, 3),   # ceil(33 / 16): the last batch is partial
    ([16, 16, 16], 16, None, 3),
    ([10, 10, 13], 16, 2, 2),      # --train-steps caps the epoch
    ([10, 10, 13], 16, 10, 3),     # a cap above the data's steps changes nothing
    ([10, 10, 13], 16, 0, 3),      # 0 means no cap (TFX's unset train_steps)
    ([0, 0, 0], 16, None, 1),      # never zero steps, which Keras would reject
    ([5, 0, 0], 64, None, 1),
])
def test_steps_per_epoch(counts, batch_size, cap, expected):
    assert trainer.steps_per_epoch(np.array(counts), batch_size, cap) == expected


def _best_epoch_on_a_tiny_model(patience: int):
    model = tf.keras.Sequential([tf.keras.Input((2,)), tf.keras.layers.Dense(1)])
    best = trainer.BestEpoch(patience)
    best.set_model(model)
    return model, best


def _epoch(model, best, epoch: int, loss):
    """One epoch: the weights become the epoch number, then its val_loss is reported."""
    for variable in model.weights:
        variable.assign(np.full(variable.shape, float(epoch), dtype=np.float32))
    best.on_epoch_end(epoch, {} if loss is None else {"val_loss": loss})


def test_best_epoch_restores_the_lowest_loss_weights_and_stops_after_patience():
    model, best = _best_epoch_on_a_tiny_model(patience=2)
    best.on_train_begin()
    for epoch, loss in enumerate([0.9, 0.5, 0.7]):
        _epoch(model, best, epoch, loss)
    assert not model.stop_training
    _epoch(model, best, 3, 0.6)  # the second epoch without a new best
    assert model.stop_training
    assert (best.best, best.best_epoch, best.losses) == (0.5, 1, [0.9, 0.5, 0.7, 0.6])
    best.restore()
    assert all(np.all(v.numpy() == 1.0) for v in model.weights)


def test_best_epoch_patience_restarts_with_each_phase_but_the_best_is_kept():
    model, best = _best_epoch_on_a_tiny_model(patience=2)
    best.on_train_begin()
    for epoch, loss in enumerate([0.4, 0.8]):
        _epoch(model, best, epoch, loss)
    model.stop_training = False
    best.on_train_begin()  # fine-tuning starts: one worse epoch does not stop it
    _epoch(model, best, 2, 0.9)
    assert not model.stop_training
    _epoch(model, best, 3, 0.95)
    assert model.stop_training
    best.restore()
    assert best.best_epoch == 0 and all(np.all(v.numpy() == 0.0) for v in model.weights)


def test_best_epoch_never_picks_a_nan_or_missing_loss():
    model, best = _best_epoch_on_a_tiny_model(patience=5)
    best.on_train_begin()
    _epoch(model, best, 0, float("nan"))
    _epoch(model, best, 1, None)
    with pytest.raises(RuntimeError, match="no epoch reported a finite val_loss"):
        best.restore()
    _epoch(model, best, 2, 1.5)
    best.restore()
    assert best.best_epoch == 2 and np.isnan(best.losses[0]) and np.isnan(best.losses[1])
    assert all(np.all(v.numpy() == 2.0) for v in model.weights)


def test_build_model_names_the_known_models_for_an_unknown_one():
    config = dict(trainer.DEFAULTS, model="vgg16")
    with pytest.raises(ValueError, match=r"unknown model 'vgg16'; choose one of baseline_cnn, "
                                         r"mobilenet_v2, efficientnet_lite0"):
        trainer.build_model(config)
