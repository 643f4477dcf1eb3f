"""Where the data lives: real downloads win over the synthetic sets, which are generated on first use."""

from __future__ import annotations

from dataclasses import replace

import pandas as pd
import pydicom
import pytest
import soundfile as sf

from helpers.config import get_settings
from helpers.data import datasets, real_tables
from helpers.data.synthetic_xray import marker_strokes


@pytest.fixture
def settings(monkeypatch, tmp_path):
    """Smoke settings with the data dir in tmp_path and tiny sizes, so that generating takes a second."""
    monkeypatch.setenv("XAI_COURSE_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("XAI_COURSE_MODE", "smoke")
    monkeypatch.setitem(datasets.KERMANY_PER_CLASS, "smoke", 2)
    base = get_settings()
    assert base.data_dir == tmp_path / "data"
    return replace(base, sizes=replace(base.sizes, rsna_patients=24, dicom_size=64, icbhi_patients=2))


def test_real_rsna_tables_are_the_full_real_files():
    labels, headers = real_tables.real_rsna_tables()
    assert list(labels.columns) == ["patientId", "x", "y", "width", "height", "Target"]
    assert len(labels) == 30227 and labels["patientId"].nunique() == 26684
    assert labels.groupby("patientId")["Target"].max().sum() == 6012
    assert labels.loc[labels["Target"] == 0, ["x", "y", "width", "height"]].isna().all().all()
    assert len(headers) == 26684 and set(headers["PatientID"]) == set(labels["patientId"])
    assert {"PatientAge", "PatientSex", "ViewPosition", "PixelSpacing"} <= set(headers.columns)
    assert "Unnamed: 0" not in headers.columns


def test_torchxrayvision_lookup_names_a_missing_file():
    assert real_tables.torchxrayvision_data_file(real_tables.XRV_LABELS).name == real_tables.XRV_LABELS
    with pytest.raises(
        FileNotFoundError, match=r"no_such_table\.csv: not found; this torchxrayvision version"
    ):
        real_tables.torchxrayvision_data_file("no_such_table.csv")


def test_synthetic_rsna_is_generated_once_then_reused(settings):
    assert datasets.rsna_dir(settings, generate=False) == settings.synthetic_dir / "rsna"
    assert not (settings.synthetic_dir / "rsna").exists()  # generate=False only says where
    folder = datasets.rsna_dir(settings)
    assert folder == settings.synthetic_dir / "rsna" and datasets.data_source("rsna", settings) == "synthetic"
    labels = pd.read_csv(folder / "stage_2_train_labels.csv")
    assert labels["patientId"].nunique() == 24
    first = next((folder / "stage_2_train_images").glob("*.dcm"))
    assert pydicom.dcmread(first).Rows == 64
    stamp = (folder / "stage_2_train_labels.csv").stat().st_mtime_ns
    assert datasets.rsna_dir(settings) == folder
    assert (folder / "stage_2_train_labels.csv").stat().st_mtime_ns == stamp


def test_real_data_wins_over_synthetic_for_every_data_set(settings):
    real = settings.data_dir
    (real / "rsna").mkdir(parents=True)
    (real / "rsna" / "stage_2_train_labels.csv").write_text("patientId,x,y,width,height,Target\n")
    (real / "kermany" / "chest_xray" / "train").mkdir(parents=True)
    (real / "icbhi" / "ICBHI_final_database").mkdir(parents=True)
    (real / "icbhi" / "ICBHI_final_database" / "101_1b1_Al_sc_Meditron.wav").write_bytes(b"")
    assert datasets.rsna_dir(settings) == real / "rsna"
    assert datasets.kermany_dir(settings) == real / "kermany"
    assert datasets.icbhi_dir(settings) == real / "icbhi"
    assert [datasets.data_source(n, settings) for n in datasets.DATASETS] == ["real"] * 3
    assert not settings.synthetic_dir.exists()  # nothing was generated
    with pytest.raises(ValueError, match="unknown data set 'mimic'; expected one of rsna, kermany, icbhi"):
        datasets.data_source("mimic", settings)


def test_half_downloaded_real_data_does_not_count(settings):
    (settings.data_dir / "rsna" / "stage_2_train_images").mkdir(parents=True)  # no labels CSV yet
    (settings.data_dir / "icbhi" / "ICBHI_final_database").mkdir(parents=True)  # no recordings
    assert datasets.data_source("rsna", settings) == "synthetic"
    assert datasets.data_source("icbhi", settings) == "synthetic"
    assert datasets.rsna_dir(settings, generate=False) == settings.synthetic_dir / "rsna"


def test_synthetic_icbhi_and_kermany_are_generated_in_this_mode(settings):
    icbhi = datasets.icbhi_dir(settings)
    assert icbhi == settings.synthetic_dir / "icbhi"
    patients = [
        line.split("\t")[0] for line in (icbhi / "ICBHI_Challenge_diagnosis.txt").read_text().splitlines()
    ]
    assert patients == ["101", "102"]
    infos = [sf.info(w) for w in (icbhi / "ICBHI_final_database").glob("*.wav")]
    assert {i.samplerate for i in infos} == {4000, 44100}  # two patients: one of each kind of device
    low, high = datasets.ICBHI_DURATION_S["smoke"]
    assert all(low <= i.duration <= high for i in infos)  # short recordings in smoke mode
    kermany = datasets.kermany_dir(settings)
    assert kermany == settings.synthetic_dir / "kermany"
    assert len(list((kermany / "chest_xray" / "train" / "NORMAL").glob("*.jpeg"))) == 2
    assert len(list((kermany / "chest_xray" / "val" / "PNEUMONIA").glob("*.jpeg"))) == 8


def test_shortcut_sets_mark_positives_only_in_the_confounded_one(settings):
    (settings.data_dir / "rsna").mkdir(parents=True)
    (settings.data_dir / "rsna" / "stage_2_train_labels.csv").write_text(
        "patientId,x,y,width,height,Target\n"
    )
    confounded, clean = datasets.rsna_shortcut_dirs(settings)  # always synthetic, even with real RSNA present
    assert confounded.parent == clean.parent == settings.synthetic_dir and confounded != clean
    strokes = marker_strokes(64)
    for folder, marked in ((confounded, True), (clean, False)):
        target = pd.read_csv(folder / "stage_2_train_labels.csv").groupby("patientId")["Target"].max()
        assert target.sum() > 0 and (target == 0).sum() > 0
        for pid, positive in target.items():
            pixels = pydicom.dcmread(folder / "stage_2_train_images" / f"{pid}.dcm").pixel_array
            for x, y, w, h in strokes:
                bright = pixels[y : y + h, x : x + w].mean() > 200
                assert bright == (marked and bool(positive)), (folder.name, pid, (x, y, w, h))
    ids = [set(pd.read_csv(f / "stage_2_train_labels.csv")["patientId"]) for f in (confounded, clean)]
    assert ids[0] != ids[1]
    assert len(ids[0]) == len(ids[1]) == settings.sizes.rsna_patients
