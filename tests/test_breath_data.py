"""helpers.breath.dataset: cycle table, label-balanced patient split, patch metrics, heat per band, band levels."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from helpers.breath import audio, dataset, icbhi
from helpers.data.synthetic_audio import make_icbhi_like
from helpers.training import models


@pytest.fixture(scope="module")
def icbhi_dir(tmp_path_factory):
    return make_icbhi_like(tmp_path_factory.mktemp("icbhi"), 3, seed=0, workers=1, duration_s=(5.0, 6.0))


def test_cycle_table_has_one_row_per_annotated_cycle(icbhi_dir):
    recordings = icbhi.list_recordings(icbhi_dir)
    table = dataset.cycle_table(recordings)
    n = sum(len(icbhi.read_annotation(t)) for t in recordings.txt)
    assert len(table) == n
    assert list(table.columns[:4]) == ["name", "cycle", "start", "end"]
    assert (table["label"] == table["crackles"] + 2 * table["wheezes"]).all()
    assert (table["class"] == [icbhi.CLASS_NAMES[k] for k in table["label"]]).all()
    assert set(table["sample_rate"]) <= {4000, 10000, 44100}
    first = table[table["name"] == recordings.name[0]]
    assert first["cycle"].tolist() == list(range(len(first)))


def meta_of(labels_per_patient: dict[int, list[int]]) -> pd.DataFrame:
    rows = [(p, label) for p, labels in labels_per_patient.items() for label in labels]
    return pd.DataFrame(rows, columns=["patient", "label"])


def test_stratified_patient_split_keeps_patients_whole_and_every_class_on_both_sides():
    # patient 6 alone has wheezes-with-crackles; only a split with 5 (or 1) and 6 on both sides works
    meta = meta_of(
        {1: [0, 0, 1, 3], 2: [0, 1], 3: [0, 0, 1, 1], 4: [0, 1, 1], 5: [2, 3, 0], 6: [2, 2, 3, 0, 1]}
    )
    split = dataset.stratified_patient_split(meta, test_fraction=0.34, seed=0)
    assert split.index.equals(meta.index) and set(split) == {"train", "test"}
    sides = meta.assign(split=split).groupby("patient")["split"].nunique()
    assert (sides == 1).all()  # a patient is on one side only
    assert meta["patient"][split == "test"].nunique() == 2  # round(6 * 0.34)
    for side in ("train", "test"):
        assert set(meta["label"][split == side]) == {0, 1, 2, 3}, side
    again = dataset.stratified_patient_split(meta, test_fraction=0.34, seed=0)
    pd.testing.assert_series_equal(split, again)
    with pytest.raises(ValueError, match="test_fraction"):
        dataset.stratified_patient_split(meta, test_fraction=1.0)
    with pytest.raises(ValueError, match="at least 2 patients"):
        dataset.stratified_patient_split(meta_of({1: [0, 1]}))


def test_patch_metrics_on_hand_made_probabilities():
    y = np.array([0, 0, 1, 2, 3, 3])
    proba = np.eye(4)[[0, 1, 1, 2, 3, 1]] * 0.7 + 0.075  # rows sum to 1; arg-max = [0, 1, 1, 2, 3, 1]
    m = dataset.patch_metrics(y, proba)
    assert m["specificity"] == 0.5 and m["sensitivity"] == 0.75 and m["score"] == 0.625
    assert m["accuracy"] == pytest.approx(4 / 6)
    # "has crackles" (labels 1, 3) scored by p1 + p3: positives [0.85, 0.85, 0.85], negatives [0.15, 0.85, 0.15]:
    # 6 of the 9 pairs won, 3 tied -> 7.5 / 9; "has wheezes" (2, 3) by p2 + p3: [0.85, 0.85, 0.15] vs 0.15 x 3
    assert m["crackle_auc"] == pytest.approx(7.5 / 9)
    assert m["wheeze_auc"] == pytest.approx(7.5 / 9)
    assert 0.5 < m["macro_auc"] <= 1.0
    only_normal = dataset.patch_metrics(np.zeros(3, int), np.full((3, 4), 0.25))
    assert np.isnan(only_normal["crackle_auc"]) and np.isnan(only_normal["sensitivity"])
    with pytest.raises(ValueError, match=r"\(N, 4\)"):
        dataset.patch_metrics(y, proba[:, :2])


def test_band_heat_profiles_average_grad_cam_over_time_and_patches():
    torch.manual_seed(0)
    model = models.breath_cnn(width=8, mean=-4.0, std=2.0).eval()  # the model standardises its input
    rng = np.random.default_rng(0)
    patches = rng.normal(-4.0, 2.0, size=(6, 96, 64)).astype(np.float32)  # log-mel levels, as computed
    labels = np.array([0, 0, 1, 1, 3, 3])
    profiles = dataset.band_heat_profiles(model, patches, labels, batch_size=4)
    assert profiles.shape == (4, 64) and np.isnan(profiles[2]).all()  # no wheeze patch
    assert np.isfinite(profiles[[0, 1, 3]]).all() and (profiles[[0, 1, 3]] >= 0).all()
    from helpers.explain.cam import grad_cam

    # the patches go to the model as they are (standardising them here too would give other heat)
    heat = grad_cam(model, torch.from_numpy(patches[2:4])[:, None], "features", 1).mean(dim=1)
    np.testing.assert_allclose(profiles[1], heat.mean(dim=0).numpy(), atol=1e-6)
    twice = torch.from_numpy((patches[2:4] + 4.0) / 2.0)[:, None]
    assert not np.allclose(
        profiles[1], grad_cam(model, twice, "features", 1).mean(dim=(0, 1)).numpy(), atol=1e-3
    )


def test_heat_share_above_and_band_levels():
    centres = audio.mel_center_frequencies()
    assert dataset.heat_share_above(np.ones(64), centres, 1500.0) == pytest.approx(10 / 64)
    assert np.isnan(dataset.heat_share_above(np.zeros(64), centres, 1500.0))
    patches = np.zeros((4, 96, 64), np.float32)
    patches[:2, :, 60:] = -4.0  # two "4 kHz" patches, dark at the top
    data = dataset.PatchDataset(
        patches=patches, labels=np.zeros(4, np.int64), recording=np.array(list("abcd")),
        patient=np.arange(4), device=np.array(["Litt3200"] * 2 + ["AKGC417L"] * 2),
        diagnosis=np.array(["COPD"] * 4), sample_rate=np.array([4000, 4000, 44100, 44100]),
        start=np.zeros(4),
    )  # fmt: skip
    levels = dataset.band_levels_by(data, "sample_rate")
    assert levels.index.tolist() == [4000, 44100] and levels.shape == (2, 64)
    assert levels.loc[4000, 63] == -4.0 and levels.loc[44100, 63] == 0.0
    high = dataset.high_band_level(patches, 1500.0)  # 10 bands above 1500 Hz, 4 of them dark
    np.testing.assert_allclose(high, [-1.6, -1.6, 0.0, 0.0], atol=1e-6)
    with pytest.raises(ValueError, match="no band centre lies above"):
        dataset.high_band_level(patches, 2500.0)
