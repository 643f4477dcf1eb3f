"""Tests of helpers.xray.eda (tables for notebook 01) and a smoke test of helpers.xray.plots."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from pydicom.dataset import Dataset, FileMetaDataset  # noqa: E402
from pydicom.uid import ExplicitVRLittleEndian  # noqa: E402

from helpers.xray import dicom, eda, plots  # noqa: E402


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def test_clean_ages_marks_impossible_and_unreadable_ages_missing():
    out = eda.clean_ages(["51", 148, -3, "abc", None, 100, 0])
    assert out.dtype == float
    np.testing.assert_array_equal(out.to_numpy(), [51, np.nan, np.nan, np.nan, np.nan, 100, 0])


def test_positive_rate_counts_and_wilson_interval():
    df = pd.DataFrame(
        {"view_position": ["AP"] * 10 + ["PA"] * 10, "Target": [1] * 4 + [0] * 6 + [1] + [0] * 9}
    )
    table = eda.positive_rate(df, "view_position")
    assert table["patients"].to_dict() == {"AP": 10, "PA": 10}
    assert table["positives"].to_dict() == {"AP": 4, "PA": 1}
    assert table.loc["AP", "rate"] == pytest.approx(0.4)
    # Wilson 95 % interval for 4 / 10 (textbook value: 0.168 to 0.687)
    assert table.loc["AP", "ci_low"] == pytest.approx(0.1682, abs=1e-4)
    assert table.loc["AP", "ci_high"] == pytest.approx(0.6873, abs=1e-4)
    assert (table["ci_low"] <= table["rate"]).all() and (table["rate"] <= table["ci_high"]).all()


def test_rows_per_patient_and_split_tables():
    raw = pd.DataFrame({"patientId": ["a", "b", "b", "c", "c", "c"]})
    assert eda.rows_per_patient(raw).to_dict() == {1: 1, 2: 1, 3: 1}
    items = pd.DataFrame(
        {
            "patientId": ["p1", "p1", "p2", "p3", "p3", "p4"],
            "label": [1, 1, 0, 0, 0, 1],
            "split": ["train", "train", "val", "train", "train", "test"],
            "image_split": ["train", "val", "val", "train", "val", "test"],
        }
    )
    table = eda.split_table(items)
    assert list(table.index) == ["train", "val", "test"]
    assert table.loc["train"].to_dict() == {
        "images": 4,
        "patients": 2,
        "positive_images": 2,
        "prevalence": 0.5,
    }
    assert eda.patients_in_several_splits(items) == 0
    assert eda.patients_in_several_splits(items, "image_split") == 2
    assert eda.leaked_fraction(items) == 0.0
    assert eda.leaked_fraction(items, split_col="image_split") == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="no rows"):
        eda.leaked_fraction(items, val="holdout")
    split = eda.image_level_split(1000, 0.2, seed=0)
    assert set(split) == {"train", "val"} and 0.15 < (split == "val").mean() < 0.25
    np.testing.assert_array_equal(split, eda.image_level_split(1000, 0.2, seed=0))


def test_zone_plate_frequency_and_nearest_subsampling():
    chart = eda.zone_plate(256, max_frequency=0.25)
    assert chart.dtype == np.float32 and chart.shape == (256, 256)
    assert 0 <= chart.min() and chart.max() <= 1
    row = chart[128]  # through the centre: local frequency grows linearly to 0.25 at the edge
    crossings = np.flatnonzero(np.diff(np.sign(row[:32] - 0.5)) != 0)  # the outer 32 px, ~0.23-0.25 cyc/px
    assert 13 <= len(crossings) <= 17  # 2 crossings per cycle: 32 * 0.24 * 2 ~ 15
    image = np.arange(16, dtype=float).reshape(4, 4)
    np.testing.assert_array_equal(eda.subsample(image, 2), [[5, 7], [13, 15]])
    assert eda.nyquist_limit(1024, 224) == pytest.approx(0.109375)


def test_running_sums_match_numpy_and_give_the_std():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(7, 9, 5), dtype=np.uint8)
    n, s1, s2 = eda.running_sums(images, batch=3)
    x = images / 255.0
    assert n == x.size
    assert s1 == pytest.approx(x.sum(), rel=1e-12) and s2 == pytest.approx((x**2).sum(), rel=1e-12)
    assert np.sqrt(s2 / n - (s1 / n) ** 2) == pytest.approx(x.std(), rel=1e-10)
    rows = np.array([5, 1])
    n2, t1, _ = eda.running_sums(images, indices=rows)
    assert n2 == 2 * 45 and t1 == pytest.approx(x[[1, 5]].sum(), rel=1e-12)


def test_toy_dataset_drives_the_pixel_pipeline():
    stored = np.array([[0, 1024, 2048, 3072, 4095]], dtype=np.uint16)
    mono2 = dicom.pixels_to_unit(stored, eda.toy_xray_dataset(bits_stored=12))
    np.testing.assert_allclose(mono2, stored / 4095, atol=1e-6)
    mono1 = dicom.pixels_to_unit(stored, eda.toy_xray_dataset(bits_stored=12, photometric="MONOCHROME1"))
    np.testing.assert_allclose(mono1, 1 - stored / 4095, atol=1e-6)
    windowed = eda.toy_xray_dataset(
        bits_stored=12, rescale_slope=0.5, rescale_intercept=-100, window_center=500, window_width=1000
    )
    assert "RescaleSlope" in windowed and "WindowCenter" in windowed
    np.testing.assert_allclose(dicom.pixels_to_unit(stored, windowed)[0, [0, 3, 4]], [0, 1, 1])
    assert (
        "RescaleSlope" not in eda.toy_xray_dataset()
        and eda.toy_xray_dataset(bits_stored=8).BitsAllocated == 8
    )
    with pytest.raises(ValueError, match="bits_stored"):
        eda.toy_xray_dataset(bits_stored=17)


def test_header_table_lists_file_meta_then_chosen_elements():
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.PatientAge, ds.Modality, ds.Rows = "051Y", "CR", 4
    ds.PixelData = bytes(32)
    table = eda.header_table(ds)
    assert list(table.columns) == ["group", "tag", "keyword", "VR", "value"]
    assert table["keyword"].tolist() == ["TransferSyntaxUID", "Modality", "PatientAge", "Rows", "PixelData"]
    assert table.iloc[0]["group"] == "file meta" and table.iloc[-1]["value"] == "<32 bytes>"
    assert eda.header_table(ds, keywords=["Rows"])["keyword"].tolist() == ["TransferSyntaxUID", "Rows"]


def test_real_rsna_metadata_and_its_figures():
    meta = eda.real_rsna_metadata()
    assert len(meta) == 26_684 and meta["patientId"].is_unique
    assert meta["Target"].sum() == 6_012 and meta["n_boxes"].sum() == 9_555
    assert (meta["age"] > 100).sum() == 5 and meta["age_clean"].isna().sum() == 5
    assert set(meta["view_position"]) == {"AP", "PA"} and set(meta["sex"]) == {"F", "M"}
    rates = eda.positive_rate(meta, "view_position")
    assert rates["positives"].to_dict() == {"AP": 4664, "PA": 1348}

    fig = plots.plot_metadata(meta, title="real")
    assert fig._suptitle.get_text() == "real" and len(fig.axes) == 4
    assert "5 above 100" in fig.axes[0].get_title()
    assert all(ax.get_ylabel() for ax in fig.axes) and all(ax.get_xlabel() for ax in fig.axes[1:])
    ax = plots.plot_positive_rate(rates, prevalence=meta["Target"].mean())
    assert [t.get_text() for t in ax.texts] == ["4,664 / 12,173", "1,348 / 14,511"]
    assert ax.get_ylabel() == "positive rate (share of patients)"


def test_image_figures_have_titles_labels_and_colour_bars():
    image = np.linspace(0, 1, 64, dtype=np.float32).reshape(8, 8)
    fig = plots.plot_image_histogram(image, boxes=[(1, 1, 3, 3)], title="t")
    assert fig._suptitle.get_text() == "t" and len(fig.axes) == 3  # image, histogram, colour bar
    assert len(fig.axes[0].patches) == 1
    fig = plots.plot_image_row({"a": image, "b": image[:4, :4]}, title="row", boxes={"b": [(0, 0, 2, 2)]})
    assert [ax.get_title() for ax in fig.axes[:2]] == ["a", "b"] and len(fig.axes) == 3
    assert fig.axes[0].get_ylabel() == "y (pixels)" and len(fig.axes[1].patches) == 1
