"""The real tables shipped in torchxrayvision: the NIH ChestX-ray14 label table that notebook 01 reads."""

from __future__ import annotations

import numpy as np

from helpers.data import real_tables


def test_nih_entries_is_the_full_real_table():
    nih = real_tables.nih_entries()
    assert len(nih) == 112_120
    assert list(nih.columns) == [
        "Image Index",
        "Finding Labels",
        "Follow-up #",
        "Patient ID",
        "Patient Age",
        "Patient Gender",
        "View Position",
        "OriginalImageWidth",
        "OriginalImageHeight",
        "OriginalImagePixelSpacingX",
        "OriginalImagePixelSpacingY",
    ]
    assert nih["Image Index"].is_unique
    assert nih["Patient ID"].nunique() == 30_805
    assert set(nih["View Position"]) == {"AP", "PA"}
    first = nih.iloc[0]
    assert (first["Image Index"], first["Patient ID"], first["Follow-up #"]) == ("00000001_000.png", 1, 0)


def test_nih_file_names_carry_the_patient_and_follow_ups_count_the_films():
    """``PPPPPPPP_NNN.png`` names the patient; each patient's ``Follow-up #`` are 0, 1, ... (one per film).

    (The ``NNN`` of the file name is not always the follow-up number: the table reorders some patients' films.)
    """
    nih = real_tables.nih_entries()
    patient = nih["Image Index"].str.removesuffix(".png").str.split("_", expand=True)[0].astype(int)
    assert (patient == nih["Patient ID"]).all()
    follow_ups = nih.groupby("Patient ID")["Follow-up #"].apply(sorted)
    assert all(f == list(range(len(f))) for f in follow_ups)


def test_nih_patients_have_several_films():
    """The numbers notebook 01 prints for the leakage lesson."""
    nih = real_tables.nih_entries()
    films_per_patient = nih.groupby("Patient ID").size()
    assert films_per_patient.max() == 184
    assert (films_per_patient == 1).sum() == 17_503
    shared = nih["Patient ID"].map(films_per_patient).gt(1).mean()
    assert np.isclose(shared, 94_617 / 112_120)
