import numpy as np
import pytest

from evaluation import metrics
from models import features


def _one_hot_probabilities(predicted, confidence=0.9):
    probabilities = np.full((len(predicted), features.NUM_CLASSES),
                            (1 - confidence) / (features.NUM_CLASSES - 1))
    probabilities[np.arange(len(predicted)), predicted] = confidence
    return probabilities


def test_auc_is_the_mann_whitney_statistic():
    is_positive = np.array([False, False, True, True])
    assert metrics.one_vs_rest_auc(is_positive, np.array([0.1, 0.4, 0.35, 0.8])) == 0.75
    assert metrics.one_vs_rest_auc(is_positive, np.array([0.5, 0.5, 0.5, 0.5])) == 0.5
    assert np.isnan(metrics.one_vs_rest_auc(np.array([True, True]), np.array([0.1, 0.2])))


def test_per_class_counts_match_hand_computation():
    labels = np.array([0, 0, 0, 1, 1, 2])
    predicted = np.array([0, 0, 1, 1, 0, 2])
    point = metrics.point_metrics(labels, _one_hot_probabilities(predicted))
    assert point["accuracy"] == pytest.approx(4 / 6)
    assert point["COVID-19/sensitivity"] == pytest.approx(2 / 3)
    assert point["COVID-19/ppv"] == pytest.approx(2 / 3)
    assert point["Pneumonia/f1"] == pytest.approx(2 * 1 / (2 * 1 + 1 + 1))
    assert point["Normal/f1"] == 1.0
    assert metrics.confusion_matrix(labels, _one_hot_probabilities(predicted)) == \
        [[2, 1, 0], [1, 1, 0], [0, 0, 1]]


def test_macro_f1_of_a_two_class_slice_averages_the_classes_it_holds():
    # One source's Normal and Pneumonia films, one of them called COVID-19.
    pneumonia, normal = features.CLASS_NAMES.index("Pneumonia"), features.CLASS_NAMES.index(
        "Normal")
    labels = np.array([pneumonia, pneumonia, normal, normal])
    predicted = np.array([pneumonia, features.COVID_CLASS_ID, normal, normal])
    point = metrics.point_metrics(labels, _one_hot_probabilities(predicted))
    assert point["COVID-19/f1"] == 0.0
    assert point["Pneumonia/sensitivity"] == 0.5
    assert point["macro_f1"] == pytest.approx((2 / 3 + 1.0) / 2)


def test_perfect_predictions_have_a_degenerate_interval():
    labels = np.array([0, 1, 2] * 10)
    estimates = metrics.bootstrap(labels, _one_hot_probabilities(labels),
                                  [f"p{i}" for i in range(30)], resamples=200)
    for name in ("accuracy", "macro_f1", "macro_auc", "COVID-19/sensitivity"):
        assert (estimates[name].value, estimates[name].low, estimates[name].high) == (1, 1, 1)


def test_accuracy_interval_matches_the_binomial_normal_approximation():
    labels = np.zeros(400, dtype=int)
    predicted = np.where(np.arange(400) < 300, 0, 1)
    estimate = metrics.bootstrap(labels, _one_hot_probabilities(predicted),
                                 [f"p{i}" for i in range(400)], resamples=2000)["accuracy"]
    half_width = 1.96 * np.sqrt(0.75 * 0.25 / 400)
    assert estimate.value == 0.75
    assert estimate.low == pytest.approx(0.75 - half_width, abs=0.01)
    assert estimate.high == pytest.approx(0.75 + half_width, abs=0.01)


def test_resampling_keeps_a_patients_images_together():
    # Patient A: one image, right. Patient B: three images, all wrong. Resampling patients
    # gives accuracy 1 (AA), 0 (BB) or 1/4 (AB); resampling images would cap it near 3/4.
    labels = np.zeros(4, dtype=int)
    probabilities = _one_hot_probabilities(np.array([0, 1, 1, 1]))
    estimate = metrics.bootstrap(labels, probabilities, ["A", "B", "B", "B"],
                                 resamples=2000)["accuracy"]
    assert (estimate.value, estimate.low, estimate.high) == (0.25, 0.0, 1.0)


def test_undefined_metrics_are_reported_as_missing():
    labels = np.array([1, 1, 2, 2])  # no COVID-19 case
    report = metrics.report(labels, _one_hot_probabilities(labels), ["a", "b", "c", "d"],
                            resamples=50)
    assert report["per_class"]["COVID-19"]["sensitivity"] == {"value": None, "ci95": [None, None]}
    assert report["per_class"]["COVID-19"]["auc"]["value"] is None
    assert report["macro_auc"]["value"] == 1.0
    assert report["class_counts"] == {"COVID-19": 0, "Pneumonia": 2, "Normal": 2}
    assert (report["n_images"], report["n_patients"]) == (4, 4)


def test_slices_split_by_each_feature_value():
    labels = np.array([0, 0, 1, 2])
    probabilities = _one_hot_probabilities(np.array([0, 1, 1, 2]))
    sliced = metrics.sliced_reports(labels, probabilities, ["a", "b", "c", "d"],
                                    {"source": ["cohen", "cohen", "kermany", "kermany"]},
                                    resamples=50)
    assert sliced["source"]["cohen"]["accuracy"]["value"] == 0.5
    assert sliced["source"]["kermany"]["accuracy"]["value"] == 1.0
    assert sliced["source"]["kermany"]["n_images"] == 2


def test_a_miss_rate_is_the_complement_of_sensitivity():
    miss = metrics.Estimate(0.9, 0.8, 0.95).complement()
    assert miss.value == pytest.approx(0.1)
    assert (miss.low, miss.high) == (pytest.approx(0.05), pytest.approx(0.2))


def test_paired_difference_of_a_model_with_itself_is_exactly_zero():
    labels = np.array([0, 1, 2, 0, 1, 2])
    probabilities = _one_hot_probabilities(np.array([0, 1, 1, 0, 2, 2]))
    difference = metrics.paired_difference(labels, probabilities, probabilities,
                                           list("abcdef"), "macro_f1", resamples=100)
    assert (difference.value, difference.low, difference.high) == (0.0, 0.0, 0.0)


def test_paired_difference_sees_a_consistent_gain():
    # Model a is right on every image; b misses one image in four. The paired interval sits
    # strictly above zero although both models' own intervals would overlap with few patients.
    labels = np.zeros(40, dtype=int)
    right = _one_hot_probabilities(labels)
    quarter_wrong = _one_hot_probabilities(np.where(np.arange(40) % 4 == 0, 1, 0))
    difference = metrics.paired_difference(labels, right, quarter_wrong,
                                           [f"p{i}" for i in range(40)], "accuracy",
                                           resamples=500)
    assert difference.value == pytest.approx(0.25)
    assert 0.0 < difference.low < 0.25 < difference.high <= 0.5


def test_wilson_interval_matches_published_values():
    # Wilson (1927) / Newcombe (1998) table: 0 of 47 -> 0 to 0.0756; 5 of 10 -> 0.2366 to
    # 0.7634; 81 of 263 -> 0.2553 to 0.3662.
    assert metrics.wilson_interval(0, 47) == pytest.approx((0.0, 0.0756), abs=1e-4)
    assert metrics.wilson_interval(5, 10) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    assert metrics.wilson_interval(81, 263) == pytest.approx((0.2553, 0.3662), abs=1e-4)


def test_no_missed_case_does_not_collapse_the_interval():
    labels = np.zeros(47, dtype=int)
    estimated = metrics.estimates(labels, _one_hot_probabilities(labels),
                                  [f"p{i}" for i in range(47)], resamples=200)
    sensitivity = estimated["COVID-19/sensitivity"]
    assert sensitivity.value == 1.0
    assert (sensitivity.low, sensitivity.high) == pytest.approx((1 - 0.0756, 1.0), abs=1e-4)


def test_clustered_interval_counts_a_patients_identical_images_about_once():
    # 10 patients with 4 images each, every patient's images all right or all wrong:
    # the images carry no more information than the 10 patients.
    successes = np.repeat([1, 1, 1, 1, 1, 1, 0, 0, 0, 0], 4).astype(bool)
    patients = np.repeat([f"p{i}" for i in range(10)], 4)
    clustered = metrics.clustered_wilson_interval(successes, patients)
    assert clustered == pytest.approx(metrics.wilson_interval(6, 10), abs=1e-9)
    independent = metrics.clustered_wilson_interval(successes, [f"i{i}" for i in range(40)])
    assert independent == pytest.approx(metrics.wilson_interval(24, 40), abs=1e-9)
    assert clustered[1] - clustered[0] > independent[1] - independent[0]


def test_all_correct_patients_each_count_once():
    successes = np.ones(12, dtype=bool)
    patients = ["a"] * 6 + ["b"] * 3 + ["c"] * 3
    assert metrics.clustered_wilson_interval(successes, patients) == \
        pytest.approx(metrics.wilson_interval(3, 3))


def test_calibration_error_of_an_overconfident_model():
    # Every image called at 0.9, six in ten right: a gap of 0.3 in the 0.9-1.0 bin.
    labels = np.zeros(10, dtype=int)
    predicted = np.array([0] * 6 + [1] * 4)
    result = metrics.calibration(labels, _one_hot_probabilities(predicted, confidence=0.9))
    assert result["ece"] == pytest.approx(0.3)
    [occupied] = [b for b in result["bins"] if b["count"]]
    assert (occupied["low"], occupied["count"], occupied["accuracy"]) == \
        (pytest.approx(0.9), 10, pytest.approx(0.6))
    assert len(result["bins"]) == metrics.CALIBRATION_BINS


def test_calibration_error_of_a_calibrated_model_is_small():
    rng = np.random.default_rng(0)
    probabilities = rng.dirichlet(np.ones(3), size=20000)
    labels = np.array([rng.choice(3, p=p) for p in probabilities])
    assert metrics.calibration(labels, probabilities)["ece"] < 0.02
