"""helpers.breath.icbhi: ICBHI names, annotations, diagnosis and split files, patch labels, splits, score;
and the patch data set that helpers.breath.dataset builds from such a folder (one pool of spawned workers)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from helpers.breath import dataset, icbhi
from helpers.breath.icbhi import IcbhiFormatError
from helpers.files import process_pool

# name: (sample rate, seconds, annotation lines, official split)
RECORDINGS = {
    # 44.1 kHz, 3 s -> patches at 0, 0.96, 1.92 s. Cycle 0-1.5 s crackles covers patch 0 fully and patch 1 by
    # 0.54 s (>= 0.48); cycle 1.5-3.0 normal covers patch 1 by 0.42 s only and patch 2 fully.
    "101_1b1_Al_sc_Meditron": (44100, 3.0, ["0.0\t1.5\t1\t0", "1.5\t3.0\t0\t0"], "train"),
    # 4 kHz, 3 s. One wheeze cycle 0.5-2.5 s: patch 0 overlaps it by 0.46 s (dropped), patches 1 and 2 kept.
    "102_1b1_Ar_sc_LittC2SE": (4000, 3.0, ["0.5\t2.5\t0\t1"], "train"),
    # 4 kHz, 2 s: patches at 0 and 0.96 s, both inside a cycle with both. Patient 102 is also in the test split.
    "102_2b1_Tc_mc_AKGC417L": (4000, 2.0, ["0.2\t1.9\t1\t1"], "test"),
}
EXPECTED_LABELS = {
    "101_1b1_Al_sc_Meditron": [1, 1, 0],
    "102_1b1_Ar_sc_LittC2SE": [2, 2],
    "102_2b1_Tc_mc_AKGC417L": [3, 3],
}
EXPECTED_STARTS = {"101_1b1_Al_sc_Meditron": [0.0, 0.96, 1.92], "102_1b1_Ar_sc_LittC2SE": [0.96, 1.92]}


def write_icbhi(root, recordings=RECORDINGS, diagnosis="101\tURTI\n102\tCOPD\n"):
    folder = root / icbhi.AUDIO_FOLDER
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name, (sr, seconds, lines, _) in recordings.items():
        sf.write(folder / f"{name}.wav", 0.1 * rng.standard_normal(int(sr * seconds)), sr, subtype="PCM_16")
        (folder / f"{name}.txt").write_text("\n".join(lines) + "\n")
    (root / icbhi.DIAGNOSIS_FILE).write_text(diagnosis)
    (root / icbhi.SPLIT_FILE).write_text("".join(f"{n}\t{r[3]}\n" for n, r in recordings.items()))
    return root


@pytest.fixture
def icbhi_dir(tmp_path):
    return write_icbhi(tmp_path / "icbhi")


# --- files ---------------------------------------------------------------------------------------------


def test_parse_filename_reads_the_five_fields():
    assert icbhi.parse_filename("101_1b1_Al_sc_Meditron.wav") == {
        "patient": 101,
        "recording": "1b1",
        "location": "Al",
        "mode": "sc",
        "device": "Meditron",
    }
    assert icbhi.parse_filename("/x/226_1b1_Pl_sc_LittC2SE.txt")["device"] == "LittC2SE"
    assert icbhi.parse_filename("130_1p2_Lr_mc_AKGC417L")["recording"] == "1p2"


@pytest.mark.parametrize(
    "name", ["101_1b1_Xx_sc_Meditron.wav", "101_1b1_Al_sc.wav", "abc_1b1_Al_sc_Meditron.wav"]
)
def test_parse_filename_names_the_bad_file(name):
    with pytest.raises(IcbhiFormatError, match=rf"^{name}: not an ICBHI recording name; expected <patient>_"):
        icbhi.parse_filename(name)


def test_read_annotation_returns_typed_cycles(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("0.036\t0.579\t0\t0\n0.579\t2.45\t1\t0\n\n2.45\t3.893\t0\t1\n3.893\t5.793\t1\t1\n")
    frame = icbhi.read_annotation(path)
    assert list(frame.columns) == ["start", "end", "crackles", "wheezes"]
    assert frame.dtypes.tolist() == [np.float64, np.float64, np.int64, np.int64]
    np.testing.assert_allclose(frame["end"], [0.579, 2.45, 3.893, 5.793])
    assert icbhi.cycle_labels(frame).tolist() == [0, 1, 2, 3]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("0.0\t1.0\t0\t0\n1.0\t2.0\t0\n", "line 2: expected 4 fields (start end crackles wheezes), found 3"),
        ("0.0\t1.0\t0\t0\n2.0\t1.5\t0\t0\n", "line 2: need 0 <= start < end, got start=2.0, end=1.5"),
        ("0.0\t1.0\t2\t0\n", "line 1: crackles and wheezes must be 0 or 1, got 2 and 0"),
        ("1.0\t2.0\t0\t0\n0.0\t1.0\t0\t0\n", "line 2: cycles are not sorted: start 0.0 comes after 1.0"),
        ("0.0\tend\t0\t0\n", "line 1: not numbers: '0.0 end 0 0'"),
    ],
)
def test_read_annotation_errors_name_file_and_line(tmp_path, text, message):
    path = tmp_path / "bad.txt"
    path.write_text(text)
    with pytest.raises(IcbhiFormatError) as caught:
        icbhi.read_annotation(path)
    assert str(caught.value) == f"{path}, {message}"


def test_read_diagnosis_and_split(tmp_path):
    (tmp_path / "d.txt").write_text("101\tURTI\n102\tHealthy\n")
    assert icbhi.read_diagnosis(tmp_path / "d.txt").to_dict("list") == {
        "patient": [101, 102],
        "diagnosis": ["URTI", "Healthy"],
    }
    (tmp_path / "s.txt").write_text("101_1b1_Al_sc_Meditron\ttrain\n102_1b1_Ar_sc_Meditron\ttest\n")
    assert icbhi.read_split(tmp_path / "s.txt")["split"].tolist() == ["train", "test"]
    (tmp_path / "bad_d.txt").write_text("101\tURTI\nCOPD\n")
    with pytest.raises(
        IcbhiFormatError, match=r"bad_d.txt, line 2: expected '<patient number><TAB><diagnosis>'"
    ):
        icbhi.read_diagnosis(tmp_path / "bad_d.txt")
    (tmp_path / "bad_s.txt").write_text("101_1b1_Al_sc_Meditron\tvalidation\n")
    with pytest.raises(
        IcbhiFormatError, match=r"bad_s.txt, line 1: expected '<recording name><TAB>train\|test'"
    ):
        icbhi.read_split(tmp_path / "bad_s.txt")
    (tmp_path / "bad_n.txt").write_text("101_1b1_Al_sc_Meditron\ttrain\n101_1b1_Al_sc\ttest\n")
    with pytest.raises(
        IcbhiFormatError, match=r"bad_n.txt, line 2: 101_1b1_Al_sc: not an ICBHI recording name"
    ):
        icbhi.read_split(tmp_path / "bad_n.txt")
    with pytest.raises(IcbhiFormatError, match=r"missing.txt: no such file"):
        icbhi.read_split(tmp_path / "missing.txt")


def test_list_recordings_joins_names_headers_diagnosis_and_split(icbhi_dir):
    table = icbhi.list_recordings(icbhi_dir)
    assert list(table.columns) == list(icbhi.RECORDING_COLUMNS)
    assert table["name"].tolist() == sorted(RECORDINGS)
    assert table["sample_rate"].tolist() == [44100, 4000, 4000]
    np.testing.assert_allclose(table["duration"], [3.0, 3.0, 2.0])
    assert table["diagnosis"].tolist() == ["URTI", "COPD", "COPD"]
    assert table["split"].tolist() == ["train", "train", "test"]
    assert table["wav"][0] == icbhi_dir / icbhi.AUDIO_FOLDER / "101_1b1_Al_sc_Meditron.wav"


def test_list_recordings_reports_what_is_missing(tmp_path):
    root = write_icbhi(tmp_path / "a", diagnosis="101\tURTI\n")
    with pytest.raises(
        IcbhiFormatError, match=r"ICBHI_Challenge_diagnosis.txt: no diagnosis for 2 recordings"
    ):
        icbhi.list_recordings(root)
    root = write_icbhi(tmp_path / "b")
    (root / icbhi.AUDIO_FOLDER / "101_1b1_Al_sc_Meditron.txt").unlink()
    with pytest.raises(IcbhiFormatError, match=r"101_1b1_Al_sc_Meditron.wav: its annotation .* is missing"):
        icbhi.list_recordings(root)
    with pytest.raises(IcbhiFormatError, match=r"no .wav recordings found"):
        icbhi.list_recordings(tmp_path / "nothing")


def test_official_split_overlap_finds_patients_on_both_sides(icbhi_dir):
    overlap = icbhi.official_split_overlap(icbhi.list_recordings(icbhi_dir))
    assert overlap.to_dict("list") == {"patient": [102], "n_train": [1], "n_test": [1]}


# --- labels and dataset --------------------------------------------------------------------------------


def test_patch_labels_or_the_flags_of_cycles_overlapping_enough():
    cycles = pd.DataFrame(
        {"start": [0.0, 1.0, 3.0], "end": [1.0, 2.5, 4.0], "crackles": [1, 0, 0], "wheezes": [0, 1, 0]}
    )
    starts = np.array([0.0, 0.5, 1.2, 2.0, 2.6, 5.0])
    # patch [0.5, 1.46): 0.5 s of cycle 0 and 0.46 s of cycle 1 -> only cycle 0 counts at 0.48 s
    # patch [2.0, 2.96): 0.5 s of cycle 1 -> wheeze; patch [2.6, 3.56): 0.56 s of cycle 2 -> normal
    assert icbhi.patch_labels(starts, cycles).tolist() == [1, 1, 2, 2, 0, -1]
    # a smaller minimum lets both cycles count: crackle OR wheeze = both
    assert icbhi.patch_labels(starts, cycles, min_overlap=0.2).tolist() == [1, 3, 2, 2, 0, -1]
    assert icbhi.patch_labels(starts, cycles.iloc[:0]).tolist() == [-1] * 6


def test_build_patch_dataset_labels_every_annotated_patch(icbhi_dir):
    data = dataset.build_patch_dataset(icbhi_dir, workers=1, progress=False)
    assert data.patches.shape == (7, 96, 64) and data.patches.dtype == np.float32
    assert len(data) == 7 and data.labels.dtype == np.int64
    meta = data.metadata()
    for name, labels in EXPECTED_LABELS.items():
        assert meta.loc[meta["recording"] == name, "label"].tolist() == labels
    for name, starts in EXPECTED_STARTS.items():
        np.testing.assert_allclose(meta.loc[meta["recording"] == name, "start"], starts)
    assert data.patient.tolist() == [101, 101, 101, 102, 102, 102, 102]
    assert data.sample_rate.tolist() == [44100] * 3 + [4000] * 4
    assert data.device.tolist()[3:] == ["LittC2SE", "LittC2SE", "AKGC417L", "AKGC417L"]
    # white noise: flat up to the top band at 44.1 kHz; at 4 kHz the resampler's anti-alias filter rolls
    # off below the 2 kHz Nyquist frequency, so the top band (1901-2000 Hz) is darker than band 55 (1.6 kHz)
    profile_4k = data.patches[data.sample_rate == 4000].mean(axis=(0, 1))
    profile_44k = data.patches[data.sample_rate == 44100].mean(axis=(0, 1))
    assert profile_4k[55] - profile_4k[63] > 1.0 and abs(profile_44k[55] - profile_44k[63]) < 0.3
    assert data.skipped == ()


def test_build_patch_dataset_with_a_pool_gives_the_same_result(icbhi_dir, monkeypatch):
    pools = []

    def spy(workers, initializer=None):  # the pool of helpers.files: spawn, as everywhere
        pools.append(workers)
        return process_pool(workers, initializer=initializer)

    monkeypatch.setattr(dataset, "process_pool", spy)
    one = dataset.build_patch_dataset(icbhi_dir, workers=1, progress=False)
    assert pools == []  # one worker: in this process
    two = dataset.build_patch_dataset(icbhi_dir, workers=2, progress=False)
    assert pools == [2]
    np.testing.assert_array_equal(one.patches, two.patches)
    pd.testing.assert_frame_equal(one.metadata(), two.metadata())


def test_build_patch_dataset_caches_and_recomputes_when_settings_or_files_change(
    icbhi_dir, tmp_path, monkeypatch
):
    cache = tmp_path / "cache" / "patches.npz"
    first = dataset.build_patch_dataset(icbhi_dir, workers=1, progress=False, cache_path=cache)
    assert cache.is_file() and not list(cache.parent.glob(".*tmp"))

    def fail(job):
        raise AssertionError("recomputed although the cache is valid")

    monkeypatch.setattr(dataset, "_recording_patches", fail)
    again = dataset.build_patch_dataset(icbhi_dir, workers=1, progress=False, cache_path=cache)
    np.testing.assert_array_equal(again.patches, first.patches)
    pd.testing.assert_frame_equal(again.metadata(), first.metadata())
    with pytest.raises(AssertionError, match="recomputed"):
        dataset.build_patch_dataset(icbhi_dir, fmax=1900.0, workers=1, progress=False, cache_path=cache)
    txt = icbhi_dir / icbhi.AUDIO_FOLDER / "101_1b1_Al_sc_Meditron.txt"
    txt.write_text("0.0\t3.0\t0\t0\n")
    with pytest.raises(AssertionError, match="recomputed"):
        dataset.build_patch_dataset(icbhi_dir, workers=1, progress=False, cache_path=cache)
    monkeypatch.undo()
    rebuilt = dataset.build_patch_dataset(icbhi_dir, workers=1, progress=False, cache_path=cache)
    assert rebuilt.labels[:3].tolist() == [0, 0, 0]  # the new annotation
    assert dataset.PatchDataset.load(cache).labels[:3].tolist() == [0, 0, 0]
    cache.write_bytes(b"not a zip file")  # a damaged cache is rebuilt, not an error
    assert len(dataset.build_patch_dataset(icbhi_dir, workers=1, progress=False, cache_path=cache)) == 7


def test_build_patch_dataset_skips_unreadable_audio_with_a_warning(tmp_path):
    recordings = dict(RECORDINGS)
    recordings["103_1b1_Al_sc_Litt3200"] = (4000, 0.5, ["0.0\t0.5\t0\t0"], "test")  # too short
    root = write_icbhi(tmp_path / "icbhi", recordings, diagnosis="101\tURTI\n102\tCOPD\n103\tHealthy\n")
    with pytest.warns(
        UserWarning, match=r"skipped 1 unreadable recordings: .*103_1b1_Al_sc_Litt3200.wav: too short"
    ):
        data = dataset.build_patch_dataset(root, workers=1, progress=False)
    assert len(data) == 7 and 103 not in data.patient
    assert len(data.skipped) == 1 and "too short" in data.skipped[0]


def test_subset_keeps_patches_and_metadata_together(icbhi_dir):
    data = dataset.build_patch_dataset(icbhi_dir, workers=1, progress=False)
    wheeze = data.subset(data.labels == 2)
    assert len(wheeze) == 2 and wheeze.recording.tolist() == ["102_1b1_Ar_sc_LittC2SE"] * 2
    np.testing.assert_array_equal(wheeze.patches, data.patches[3:5])


# --- splits and score ----------------------------------------------------------------------------------


def test_patient_split_keeps_each_patient_on_one_side_and_is_seeded():
    diagnoses = ["COPD"] * 20 + ["Healthy"] * 10 + ["URTI"] * 6 + ["Asthma"]
    df = pd.DataFrame({"patient": np.repeat(np.arange(37), 3), "diagnosis": np.repeat(diagnoses, 3)})
    split = icbhi.patient_split(df, test_fraction=0.3, seed=0)
    assert split.index.equals(df.index) and set(split) == {"train", "test"}
    assert (df.assign(split=split).groupby("patient")["split"].nunique() == 1).all()
    per_patient = df.assign(split=split).drop_duplicates("patient")
    test_per_group = per_patient[per_patient["split"] == "test"].groupby("diagnosis").size().to_dict()
    # round(37 * 0.3) = 11 test patients: floor(20, 10, 6, 1 * 0.3) = 6, 3, 1, 0, and the one still owed goes
    # to URTI, the group with the largest remainder (1.8); the single asthma patient stays in train
    assert test_per_group == {"COPD": 6, "Healthy": 3, "URTI": 2}
    assert split.equals(icbhi.patient_split(df, test_fraction=0.3, seed=0))
    assert not split.equals(icbhi.patient_split(df, test_fraction=0.3, seed=1))
    assert (icbhi.patient_split(df, 0.5, by=None) == "test").sum() == 18 * 3
    two = pd.DataFrame({"patient": [1, 1, 2], "diagnosis": ["COPD", "COPD", "URTI"]})
    sides = icbhi.patient_split(two, 0.1).groupby(two["patient"]).agg(set)  # 0.2 patients rounds up to one
    assert sorted(side for patient_sides in sides for side in patient_sides) == ["test", "train"]
    with pytest.raises(ValueError, match=r"test_fraction must lie in \(0, 1\), got 1.5"):
        icbhi.patient_split(df, 1.5)


def test_icbhi_score_against_hand_computed_values():
    y_true = [0, 0, 0, 0, 1, 1, 2, 3, 3, 2]
    y_pred = [0, 0, 1, 3, 1, 3, 2, 3, 0, 1]
    # normal: 2 of 4 right -> Sp 0.5; abnormal: 1 (1 ok), 1 (no), 2 (ok), 3 (ok), 3 (no), 2 (no) -> Se 3/6
    assert icbhi.icbhi_score(y_true, y_pred) == {
        "specificity": 0.5,
        "sensitivity": 0.5,
        "score": 0.5,
        "n_normal": 4,
        "n_abnormal": 6,
    }
    # predicting "crackle" for a wheeze is abnormal but the wrong class: it does not count as sensitive
    perfect_normal = icbhi.icbhi_score([0, 0, 2, 2, 2], [0, 0, 1, 2, 2])
    assert perfect_normal["specificity"] == 1.0 and perfect_normal["sensitivity"] == pytest.approx(2 / 3)
    assert perfect_normal["score"] == pytest.approx(5 / 6)
    assert np.isnan(icbhi.icbhi_score([1, 2], [1, 2])["specificity"])
    with pytest.raises(ValueError, match="differ in length"):
        icbhi.icbhi_score([0, 1], [0])


def test_cycle_probabilities_average_the_overlapping_patches_by_overlap():
    cycles = pd.DataFrame(
        {"name": ["a", "a", "a", "b"], "start": [0.0, 1.5, 5.0, 0.2], "end": [1.5, 2.5, 6.0, 0.9]}
    )
    recording = np.array(["a", "a", "a", "b"])
    start = np.array([0.0, 0.96, 1.92, 0.0])
    proba = np.array([[0.8, 0.2, 0, 0], [0.2, 0.2, 0.6, 0], [0, 0, 0, 1.0], [0.1, 0.9, 0, 0]])
    got = icbhi.cycle_probabilities(cycles, recording, start, proba)
    # cycle a 0-1.5 s: patch 0 overlaps it by 0.96 s, patch 1 ([0.96, 1.92)) by 0.54 s; patch 2 not at all
    # -> (0.96 * [0.8, 0.2, 0, 0] + 0.54 * [0.2, 0.2, 0.6, 0]) / 1.5 = [0.584, 0.2, 0.216, 0]: normal
    np.testing.assert_allclose(got[0], [0.584, 0.2, 0.216, 0.0])
    # cycle a 1.5-2.5 s: patch 1 by 0.42 s, patch 2 ([1.92, 2.88)) by 0.58 s -> [0.084, 0.084, 0.252, 0.58]
    np.testing.assert_allclose(got[1], [0.084, 0.084, 0.252, 0.58])
    assert np.isnan(got[2]).all()  # no patch reaches 5 s
    np.testing.assert_allclose(got[3], [0.1, 0.9, 0, 0])  # only recording b's patch counts
    assert got.argmax(axis=1)[[0, 1, 3]].tolist() == [0, 3, 1]
    cycle_labels = np.array([0, 3, 1])  # scored per cycle: all three right
    assert icbhi.icbhi_score(cycle_labels, got[[0, 1, 3]].argmax(axis=1))["score"] == 1.0
    assert icbhi.cycle_probabilities(cycles, recording[:0], start[:0], proba[:0]).shape == (4, 4)
