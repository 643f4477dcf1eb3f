"""Tests of helpers.evaluate.bootstrap: intervals against known cases, patient resampling, determinism, tables."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.metrics import average_precision_score, roc_auc_score

from helpers.evaluate import bootstrap as B
from helpers.evaluate import metrics as M

# The worked example of tests/test_metrics.py. Positives: 0.9, 0.4, 0.8. Negatives: 0.1, 0.6, 0.3, 0.95, 0.2.
Y = np.array([0, 0, 0, 0, 1, 1, 1, 0])
P = np.array([0.1, 0.6, 0.3, 0.95, 0.9, 0.4, 0.8, 0.2])
# At 0.5: tp 2, fp 2, tn 3, fn 1.
HAND_AT_HALF = {
    "accuracy": 5 / 8,
    "sensitivity": 2 / 3,
    "specificity": 3 / 5,
    "precision": 2 / 4,
    "npv": 3 / 4,
    "f1": 4 / 7,
    "prevalence": 3 / 8,
}
HAND_ROC_AUC, HAND_PR_AUC, HAND_BRIER = 11 / 15, 53 / 90, 1.8125 / 8


def test_the_bootstrap_names_live_only_in_bootstrap():
    """No re-exports: each name is imported from the module that defines it (helpers/__init__.py)."""
    for name in B.__all__:
        value = getattr(B, name)
        if callable(value):  # a function or class defined here, not imported from elsewhere
            assert value.__module__ == B.__name__, name
        assert not hasattr(M, name), f"helpers.evaluate.metrics re-exports {name}"
    assert "bootstrap_ci" not in dir(M)
    with pytest.raises(AttributeError, match="no attribute 'bootstrap_ci'"):
        M.bootstrap_ci  # noqa: B018


@pytest.mark.parametrize("name", M.SUMMARY_METRICS)
def test_batched_metric_equals_sklearn_with_sample_weights(name):
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 120)
    p = np.round(rng.random(120), 1)  # many ties
    weights = rng.integers(0, 3, size=(6, 120))
    metric = B.metric_function(name, threshold=0.5)
    got = metric.batched(y, p, weights)
    for b, w in enumerate(weights):
        idx = np.repeat(np.arange(120), w)
        assert got[b] == pytest.approx(metric(y[idx], p[idx]), abs=1e-12)
    if name == "roc_auc":
        assert got[0] == pytest.approx(roc_auc_score(y, p, sample_weight=weights[0]), abs=1e-12)
    if name == "pr_auc":
        assert got[0] == pytest.approx(average_precision_score(y, p, sample_weight=weights[0]), abs=1e-12)


def test_bootstrap_of_a_constant_metric_has_zero_width():
    assert B.bootstrap_ci(Y, P, lambda y, p: 0.7, n_boot=50) == (0.7, 0.7, 0.7)


@pytest.mark.parametrize("vectorised", [True, False])
def test_bootstrap_of_a_mean_matches_the_normal_approximation(vectorised):
    y = np.r_[np.ones(300, dtype=int), np.zeros(700, dtype=int)]
    p = np.full(1000, 0.5)
    fn = B.metric_function("prevalence") if vectorised else (lambda yy, pp: float(yy.mean()))
    point, low, high = B.bootstrap_ci(y, p, fn, n_boot=4000, seed=1)
    half = 1.96 * np.sqrt(0.3 * 0.7 / 1000)  # 0.0284
    assert point == 0.3
    assert low == pytest.approx(0.3 - half, abs=0.004)
    assert high == pytest.approx(0.3 + half, abs=0.004)


def test_bootstrap_is_deterministic_given_the_seed():
    fn = B.metric_function("roc_auc")
    first = B.bootstrap_ci(Y, P, fn, n_boot=200, seed=7)
    assert B.bootstrap_ci(Y, P, fn, n_boot=200, seed=7) == first
    assert B.bootstrap_ci(Y, P, fn, n_boot=200, seed=8) != first


def test_vectorised_and_per_resample_paths_draw_the_same_resamples():
    rng = np.random.default_rng(0)
    y, p, groups = rng.integers(0, 2, 90), rng.random(90), rng.integers(0, 30, 90)
    fns = {
        "fast": B.metric_function("roc_auc"),
        "slow": lambda yy, pp: roc_auc_score(yy, pp) if 0 < yy.mean() < 1 else np.nan,
    }
    samples = B.bootstrap_samples(y, p, fns, groups=groups, n_boot=150, seed=2)
    np.testing.assert_allclose(samples["fast"], samples["slow"], atol=1e-12)


def test_bootstrap_resamples_patients_as_whole_units():
    sizes = np.array([1, 2, 3] * 10)  # 30 patients with 1, 2 or 3 images each
    patient = np.repeat(np.arange(30), sizes)
    p = patient / 100  # carries the patient id into the metric

    def only_whole_patients(yy, pp):
        counts = np.bincount(np.rint(pp * 100).astype(int), minlength=30)
        return float(np.all(counts % sizes == 0))

    y = np.zeros(len(patient), dtype=int)
    assert B.bootstrap_ci(y, p, only_whole_patients, groups=patient, n_boot=100) == (1.0, 1.0, 1.0)


def test_patient_resampling_widens_the_interval_of_clustered_data():
    # 60 patients x 5 identical images: the information is that of 60 cases, not 300.
    y = np.repeat(np.arange(60) % 2, 5)
    p, patient = np.full(300, 0.5), np.repeat(np.arange(60), 5)
    fn = B.metric_function("prevalence")
    _, low_g, high_g = B.bootstrap_ci(y, p, fn, groups=patient, n_boot=3000)
    _, low_r, high_r = B.bootstrap_ci(y, p, fn, n_boot=3000)
    assert high_g - low_g == pytest.approx(2 * 1.96 * np.sqrt(0.25 / 60), rel=0.12)
    assert high_r - low_r == pytest.approx(2 * 1.96 * np.sqrt(0.25 / 300), rel=0.12)


def test_bootstrap_warns_when_many_resamples_are_undefined():
    y = np.r_[np.zeros(9, dtype=int), 1]  # one positive: (9/10)^10 = 35 % of resamples have none
    p = np.linspace(0.05, 0.95, 10)
    with pytest.warns(UndefinedMetricWarning, match="undefined in 3[0-9]% of the bootstrap resamples"):
        point, low, high = B.bootstrap_ci(y, p, B.metric_function("roc_auc"), n_boot=2000)
    assert point == 1.0 and 0 <= low <= high <= 1  # the positive has the highest score


def test_bootstrap_argument_errors():
    with pytest.raises(ValueError, match="one id per row"):
        B.bootstrap_ci(Y, P, B.metric_function("f1"), groups=[1, 2, 3])
    with pytest.raises(ValueError, match="n_boot must be >= 1"):
        B.bootstrap_ci(Y, P, B.metric_function("f1"), n_boot=0)
    with pytest.raises(ValueError, match=r"ci must be in \(0, 1\)"):
        B.bootstrap_ci(Y, P, B.metric_function("f1"), ci=95)
    with pytest.raises(ValueError, match="unknown metric 'auc'"):
        B.metric_function("auc")


def test_summary_table_estimates_and_determinism():
    table = B.summary_table(Y, P, 0.5, n_boot=200, seed=0)
    assert table["metric"].tolist() == list(M.SUMMARY_METRICS)
    estimates = dict(zip(table["metric"], table["estimate"], strict=True))
    expected = dict(HAND_AT_HALF)
    assert estimates == pytest.approx(
        {**expected, "roc_auc": HAND_ROC_AUC, "pr_auc": HAND_PR_AUC, "brier": HAND_BRIER}
    )
    assert (table["ci_low"] <= table["estimate"] + 1e-12).all() and (
        table["estimate"] <= table["ci_high"] + 1e-12
    ).all()
    pd.testing.assert_frame_equal(table, B.summary_table(Y, P, 0.5, n_boot=200, seed=0))
    assert table.attrs == {"n": 8, "threshold": 0.5, "n_boot": 200, "ci": 0.95}


def _subgroup_frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "sex": ["F"] * 4 + ["M"] * 6,
            "label": [0, 1, 1, 0] + [1, 0, 0, 1, 0, 1],
            "prob": [0.2, 0.7, 0.4, 0.1] + [0.9, 0.6, 0.3, 0.2, 0.1, 0.8],
            "patient": [0, 1, 2, 3, 4, 4, 5, 6, 7, 8],
        }
    )


@pytest.mark.filterwarnings("ignore:sex=:sklearn.exceptions.UndefinedMetricWarning")  # 4-6 rows per subgroup
def test_subgroup_table_counts_and_hand_computed_estimates():
    table = B.subgroup_table(
        _subgroup_frame(), "sex", threshold=0.5, n_boot=100, seed=0, patient_col="patient"
    )
    assert list(table.columns) == [
        "variable", "subgroup", "n", "n_positive", "prevalence",
        "auc", "auc_low", "auc_high",
        "sensitivity", "sensitivity_low", "sensitivity_high",
        "specificity", "specificity_low", "specificity_high",
    ]  # fmt: skip
    assert table["subgroup"].tolist() == ["F", "M"]
    assert table["n"].tolist() == [4, 6] and table["n_positive"].tolist() == [2, 3]
    assert table["prevalence"].tolist() == [0.5, 0.5]
    # F: positives 0.7, 0.4 above both negatives -> AUC 1; at 0.5 sens 1/2, spec 2/2.
    # M: positives 0.9, 0.2, 0.8 vs negatives 0.6, 0.3, 0.1 -> 3 + 1 + 3 = 7 of 9; sens 2/3, spec 2/3.
    assert table["auc"].tolist() == pytest.approx([1.0, 7 / 9])
    assert table["sensitivity"].tolist() == pytest.approx([0.5, 2 / 3])
    assert table["specificity"].tolist() == pytest.approx([1.0, 2 / 3])
    assert (table["auc_low"] <= table["auc"]).all() and (table["auc"] <= table["auc_high"]).all()


def test_subgroup_table_degenerate_subgroup_and_missing_column():
    df = _subgroup_frame().assign(view=["AP"] * 4 + ["PA"] * 6)
    df.loc[df["view"] == "AP", "label"] = 0
    with pytest.warns(UndefinedMetricWarning, match="view='AP': auc, sensitivity undefined"):
        table = B.subgroup_table(df, "view", threshold=0.5, n_boot=50)
    assert np.isnan(table.loc[0, "auc"]) and table.loc[0, "specificity"] == 0.75  # 0.7 is called positive
    with pytest.raises(ValueError, match=r"columns \['age'\] not in the DataFrame"):
        B.subgroup_table(df, "age", threshold=0.5)


def test_compare_models_pairs_the_resamples():
    rng = np.random.default_rng(5)
    y = rng.integers(0, 2, 200)
    good = np.clip(0.5 * y + 0.5 * rng.random(200), 0, 1)
    probs = {"good": good, "same": good.copy(), "constant": np.full(200, 0.3)}
    table = B.compare_models(y, probs, "roc_auc", n_boot=300, seed=4)
    assert table["model"].tolist() == ["good", "same", "constant"]
    assert table.attrs["reference"] == "good" and table.attrs["metric"] == "roc_auc"
    # A copy of the reference differs by exactly 0 on every resample: a zero-width paired interval.
    same = table.set_index("model").loc["same"]
    assert (same["difference"], same["difference_low"], same["difference_high"]) == (0.0, 0.0, 0.0)
    constant = table.set_index("model").loc["constant"]
    assert constant["estimate"] == 0.5 and constant["ci_low"] == 0.5  # all ties: AUC 1/2 on every resample
    assert constant["difference_high"] < 0  # clearly worse than the reference
    point, low, high = B.bootstrap_ci(y, good, B.metric_function("roc_auc"), n_boot=300, seed=4)
    good_row = table.set_index("model").loc["good"]
    assert (good_row["estimate"], good_row["ci_low"], good_row["ci_high"]) == (point, low, high)
    with pytest.raises(ValueError, match="probs is empty"):
        B.compare_models(y, {})


def test_format_intervals_joins_estimates_and_bounds():
    summary = pd.DataFrame(
        {
            "metric": ["roc_auc", "f1"],
            "estimate": [0.8125, np.nan],
            "ci_low": [0.7, np.nan],
            "ci_high": [0.9, 1.0],
        }
    )
    assert B.format_intervals(summary).to_dict("list") == {
        "metric": ["roc_auc", "f1"],
        "estimate": ["0.812 [0.700, 0.900]", "undefined"],
    }
    sub = pd.DataFrame(
        {
            "subgroup": ["AP"],
            "n": [10],
            "prevalence": [0.33333],
            "auc": [0.5],
            "auc_low": [0.25],
            "auc_high": [0.75],
        }
    )
    assert B.format_intervals(sub, digits=2).to_dict("records") == [
        {"subgroup": "AP", "n": 10, "prevalence": 0.33, "auc": "0.50 [0.25, 0.75]"}
    ]


def test_mean_ci_draws_whole_patients_and_skips_nan():
    from helpers.evaluate.bootstrap import mean_ci

    values = np.array([1.0, 1.0, 1.0, 0.0, 0.0, 0.0, np.nan])
    mean, low, high = mean_ci(values, n_boot=400, seed=1)
    assert mean == pytest.approx(0.5) and 0.0 <= low < 0.5 < high <= 1.0
    # Two patients with three identical images each: a resample holds 0, 1 or 2 copies of each patient, so
    # the mean is 0, 0.5 or 1; drawing images instead would give many more values and a narrower interval.
    by_patient = mean_ci(values, groups=list("aaabbbc"), n_boot=400, seed=1)
    assert by_patient[0] == pytest.approx(0.5) and (by_patient[1], by_patient[2]) == (0.0, 1.0)
    assert by_patient[2] - by_patient[1] > high - low
    assert mean_ci(values, n_boot=400, seed=1) == (mean, low, high)  # seeded
    assert np.isnan(mean_ci([np.nan, np.nan])[0])
    with pytest.raises(ValueError, match="one id per value"):
        mean_ci(values, groups=["a", "b"])
