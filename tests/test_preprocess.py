"""Tests of helpers.xray.preprocess (resize, split, mean/std, the store) and the folder listers of RSNA and Kermany."""

from __future__ import annotations

import io
import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from pydicom import uid
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate

from helpers.xray import preprocess
from helpers.xray import store as store_module
from helpers.xray.dicom import DicomReadError
from helpers.xray.kermany import kermany_items, patient_id
from helpers.xray.preprocess import load_and_resize, running_mean_std, split_patients
from helpers.xray.rsna import rsna_items
from helpers.xray.store import build_store, export_paper_layout, load_store


def write_dicom(path: Path, pixels: np.ndarray, *, jpeg: bool = False, **elements) -> Path:
    """A single-frame grayscale DICOM file: native, or JPEG Baseline encoded with Pillow (like RSNA)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = uid.SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = uid.generate_uid()
    meta.TransferSyntaxUID = uid.JPEGBaseline8Bit if jpeg else uid.ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.PatientID = path.stem
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = pixels.dtype.itemsize * 8
    ds.HighBit, ds.PixelRepresentation = ds.BitsStored - 1, 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # real RSNA ages are plain '51', which pydicom flags as invalid AS
        for key, value in elements.items():
            setattr(ds, key, value)
    if jpeg:
        buf = io.BytesIO()
        Image.fromarray(pixels).save(buf, format="JPEG", quality=95)
        ds.PixelData = encapsulate([buf.getvalue()])
        ds["PixelData"].VR, ds["PixelData"].is_undefined_length = "OB", True
    else:
        ds.PixelData = pixels.tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def smooth_image(seed: int, size: int = 96) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size] / size
    a, b = np.random.default_rng(seed).uniform(2, 6, 2)
    return (128 + 90 * np.sin(a * xx * 3) * np.cos(b * yy * 3)).astype(np.uint8)


def make_rsna_dir(root: Path, n: int = 8, size: int = 96) -> Path:
    """A tiny RSNA folder in the Kaggle layout: JPEG Baseline DICOMs, labels with boxes, class info."""
    (root / "stage_2_train_images").mkdir(parents=True)
    rows, classes = ["patientId,x,y,width,height,Target"], ["patientId,class"]
    for i in range(n):
        pid = f"pat{i:02d}"
        write_dicom(
            root / "stage_2_train_images" / f"{pid}.dcm",
            smooth_image(i, size),
            jpeg=True,
            PatientAge=f"{30 + i:03d}Y" if i % 2 else str(30 + i),
            PatientSex="MF"[i % 2],
            ViewPosition="PA" if i % 3 else "AP",
            PixelSpacing=[0.14, 0.14],
        )
        if i % 2:
            rows += [f"{pid},10,12,20,30,1", f"{pid},50,12,20,30,1"]
            classes += [f"{pid},Lung Opacity"] * 2
        else:
            rows.append(f"{pid},,,,,0")
            classes.append(f"{pid},Normal")
    (root / "stage_2_train_labels.csv").write_text("\n".join(rows) + "\n")
    (root / "stage_2_detailed_class_info.csv").write_text("\n".join(classes) + "\n")
    return root


# --- load_and_resize -----------------------------------------------------------------------------------


def test_constant_images_keep_their_value_on_every_path(tmp_path):
    flat = np.full((80, 120), 77, np.uint8)
    jpeg = write_dicom(tmp_path / "j.dcm", flat, jpeg=True)
    native16 = write_dicom(tmp_path / "n.dcm", np.full((80, 120), 77 * 257, np.uint16))
    png = tmp_path / "k.png"
    Image.fromarray(flat).save(png)
    for path in (jpeg, native16, png):
        out = load_and_resize(path, 32)
        assert out.dtype == np.uint8 and out.shape == (32, 32)
        np.testing.assert_array_equal(out, 77)


def test_jpeg_dicom_fast_path_matches_full_decode(tmp_path):
    image = smooth_image(3, 256)
    path = write_dicom(tmp_path / "a.dcm", image, jpeg=True)
    fast = load_and_resize(path, 64).astype(int)
    full = np.asarray(Image.fromarray(image).resize((64, 64), Image.Resampling.BILINEAR, reducing_gap=3.0))
    assert np.abs(fast - full).mean() < 1.0 and np.abs(fast - full).max() <= 6
    inverted = write_dicom(tmp_path / "m1.dcm", image, jpeg=True, PhotometricInterpretation="MONOCHROME1")
    np.testing.assert_array_equal(load_and_resize(inverted, 64), 255 - fast)


def test_damaged_jpeg_frame_is_reported_by_the_full_decoder(tmp_path):
    path = write_dicom(tmp_path / "a.dcm", smooth_image(1, 64), jpeg=True)
    raw = path.read_bytes()
    start = raw.index(b"\xff\xd8")  # the JPEG stream inside the DICOM file: keep its length, spoil its data
    path.write_bytes(raw[: start + 200] + b"\x00" * (len(raw) - start - 220) + raw[-20:])
    with pytest.raises(ValueError, match=r"a\.dcm: can't decode the pixel data \(JPEG Baseline"):
        load_and_resize(path, 16)


@pytest.mark.parametrize("slope", [0, "NaN"])
def test_bad_rescale_is_refused_on_the_jpeg_fast_path_too(tmp_path, slope):
    # RSNA-like JPEG DICOM: slope 0 used to take the fast path (read as 1), NaN gave an all-NaN image.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = write_dicom(
            tmp_path / "a.dcm", smooth_image(1, 64), jpeg=True, RescaleSlope=slope, RescaleIntercept=0
        )
    with pytest.raises(DicomReadError, match=r"a\.dcm: bad scaling header RescaleSlope='(0\.0|NaN)'"):
        load_and_resize(path, 16)


def test_non_square_is_squashed_to_size(tmp_path):
    halves = np.zeros((40, 80), np.uint16)
    halves[:, 40:] = 4095
    path = write_dicom(tmp_path / "wide.dcm", halves, BitsStored=12, HighBit=11)
    out = load_and_resize(path, 16)
    assert out.shape == (16, 16)
    np.testing.assert_array_equal(out[:, :7], 0)
    np.testing.assert_array_equal(out[:, 9:], 255)


def test_kermany_style_pictures(tmp_path):
    rgb = np.zeros((60, 90, 3), np.uint8)
    rgb[:, 45:] = 200
    Image.fromarray(rgb).save(tmp_path / "x.jpeg", quality=95)
    out = load_and_resize(tmp_path / "x.jpeg", 30)
    assert (
        out.shape == (30, 30)
        and abs(int(out[:, :10].mean())) <= 2
        and abs(int(out[:, -10:].mean()) - 200) <= 2
    )
    Image.fromarray(np.full((20, 20), 65535, np.uint16)).save(tmp_path / "y.png")  # 16-bit PNG
    np.testing.assert_array_equal(load_and_resize(tmp_path / "y.png", 10), 255)
    (tmp_path / "z.jpeg").write_bytes(b"not a picture")
    with pytest.raises(ValueError, match=r"z\.jpeg: not a readable image"):
        load_and_resize(tmp_path / "z.jpeg", 10)


# --- split and statistics ------------------------------------------------------------------------------


def test_split_patients_is_patient_level_stratified_and_seeded():
    patients = [f"p{i}" for i in range(50)]
    labels = [1 if i < 10 else 0 for i in range(50)]
    df = pd.DataFrame({"patientId": np.repeat(patients, 2), "label": np.repeat(labels, 2)})  # 2 images each
    split = split_patients(df, val_fraction=0.2, seed=0)
    assert split.index.equals(df.index) and set(split) == {"train", "val"}
    per_patient = split.groupby(df["patientId"]).nunique()
    assert (per_patient == 1).all()  # no patient on both sides
    val = df[split == "val"].drop_duplicates("patientId")
    assert len(val) == 10 and val["label"].sum() == 2  # exactly 1/5 of patients, 1/5 of positives
    assert split.equals(split_patients(df, val_fraction=0.2, seed=0))
    assert not split.equals(split_patients(df, val_fraction=0.2, seed=1))
    three = split_patients(df, val_fraction=0.2, test_fraction=0.2, seed=0)
    counts = three.groupby(df["patientId"]).first().value_counts()
    assert counts.to_dict() == {"train": 30, "val": 10, "test": 10}
    with pytest.raises(ValueError, match="val \\+ test < 1"):
        split_patients(df, val_fraction=0.6, test_fraction=0.5)


def test_running_mean_std_matches_numpy():
    images = np.random.default_rng(0).integers(0, 256, size=(37, 19, 23), dtype=np.uint8)
    mean, std = running_mean_std(images, batch=5)
    assert mean == pytest.approx((images / 255.0).mean(), abs=1e-12)
    assert std == pytest.approx((images / 255.0).std(), abs=1e-12)
    rows = np.array([30, 2, 7])
    mean, std = running_mean_std(images, batch=2, indices=rows)
    assert (mean, std) == pytest.approx(
        ((images[rows] / 255.0).mean(), (images[rows] / 255.0).std()), abs=1e-12
    )


# --- the store -----------------------------------------------------------------------------------------


def rsna_store_items(tmp_path: Path, n: int = 8) -> pd.DataFrame:
    items = rsna_items(make_rsna_dir(tmp_path / "rsna", n), progress=False)
    broken = Path(items.at[3, "path"])
    broken.write_bytes(broken.read_bytes()[:300])  # one truncated file
    return items


def test_rsna_items_joins_labels_and_headers(tmp_path):
    items = rsna_items(make_rsna_dir(tmp_path / "rsna", 4), progress=False)
    assert items.columns.tolist() == [
        "path",
        "patientId",
        "label",
        "boxes",
        "class",
        "age",
        "sex",
        "view_position",
        "orig_height",
        "orig_width",
        "pixel_spacing",
    ]
    assert items["patientId"].tolist() == ["pat00", "pat01", "pat02", "pat03"]
    assert items["label"].tolist() == [0, 1, 0, 1] and items["age"].tolist() == [30.0, 31.0, 32.0, 33.0]
    assert items.at[1, "boxes"] == [(10.0, 12.0, 20.0, 30.0), (50.0, 12.0, 20.0, 30.0)]
    assert items.at[1, "class"] == "Lung Opacity" and items.at[0, "view_position"] == "AP"
    assert items.at[2, "pixel_spacing"] == (0.14, 0.14) and items.at[2, "orig_width"] == 96
    Path(items.at[2, "path"]).unlink()
    with pytest.raises(
        ValueError, match=r"stage_2_train_images: 1 of 4 labelled patients have no image \(pat02\.dcm\)"
    ):
        rsna_items(tmp_path / "rsna", progress=False)


def test_rsna_items_skips_and_reports_unreadable_headers(tmp_path):
    root = make_rsna_dir(tmp_path / "rsna", 6)
    images = root / "stage_2_train_images"
    (images / "pat02.dcm").write_bytes((images / "pat02.dcm").read_bytes()[:200])  # truncated
    (images / "pat04.dcm").write_text("not a DICOM file at all" * 10)
    with pytest.warns(UserWarning) as record:
        items = rsna_items(root, progress=False)
    assert len(record) == 1  # one warning for the whole scan
    message = str(record[0].message)
    assert message.startswith(f"{images}: skipped 2 of 6 images whose DICOM header can't be read")
    assert f"skipped: {images / 'pat02.dcm'}: " in message  # cut between elements: no image size
    assert f"skipped: {images / 'pat04.dcm'}: not a DICOM file" in message
    assert items["patientId"].tolist() == ["pat00", "pat01", "pat03", "pat05"]
    assert items.index.tolist() == [0, 1, 2, 3] and items["orig_width"].tolist() == [96] * 4
    skipped = items.attrs["skipped"]
    assert [s["path"] for s in skipped] == [str(images / "pat02.dcm"), str(images / "pat04.dcm")]
    assert all(s["reason"].startswith(s["path"]) for s in skipped)
    for path in images.glob("*.dcm"):
        path.write_bytes(b"")
    with pytest.raises(ValueError, match=r"none of the 6 DICOM headers can be read; first: .*pat00\.dcm"):
        rsna_items(root, progress=False)


def test_rsna_items_refuses_boxes_outside_their_image(tmp_path):
    root = make_rsna_dir(tmp_path / "rsna", 4)
    labels = root / "stage_2_train_labels.csv"
    labels.write_text(labels.read_text().replace("pat03,50,12,20,30,1", "pat03,50,12,60,30,1"))
    with pytest.raises(ValueError) as info:
        rsna_items(root, progress=False)
    assert (
        str(info.value)
        == f"{labels}: boxes outside their image: pat03 (50.0, 12.0, 60.0, 30.0) in a 96 x 96 image"
    )


def test_build_store_marks_a_bad_scaling_header_failed_not_black(tmp_path):
    root = make_rsna_dir(tmp_path / "rsna", 8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        write_dicom(
            root / "stage_2_train_images" / "pat01.dcm",
            smooth_image(1),
            jpeg=True,
            RescaleSlope="NaN",
            RescaleIntercept=0,
        )
    items = rsna_items(root, progress=False)  # the header itself is readable
    store = load_store(build_store(items, tmp_path / "store", size=16, workers=1, progress=False))
    assert store.index["ok"].tolist() == [True, False, True, True, True, True, True, True]
    assert not store.images[1].any()  # failed and counted, not an image of NaN read as black with ok=True
    assert "bad scaling header RescaleSlope='NaN'" in store.stats["failed"][0]["reason"]


def test_build_store_contents_and_failures(tmp_path, capsys):
    items = rsna_store_items(tmp_path)
    dest = build_store(items, tmp_path / "store", size=32, workers=1, progress=False)
    assert sorted(p.name for p in dest.iterdir()) == ["images.npy", "index.csv", "stats.json"]
    assert not (tmp_path / "store.partial").exists()
    out = capsys.readouterr().out
    assert "8 images at 32x32, 7 ok, 1 failed" in out and f"failed: {items.at[3, 'path']}: truncated" in out

    store = load_store(dest)
    assert isinstance(store.images, np.memmap) and store.images.shape == (8, 32, 32)
    assert store.images.dtype == np.uint8
    for i in (0, 1, 7):
        np.testing.assert_array_equal(store.images[i], load_and_resize(items.at[i, "path"], 32))
    assert store.index["ok"].tolist() == [True, True, True, False, True, True, True, True]
    assert not store.images[3].any()  # a failed file keeps a zero image
    assert store.index.loc[1, "boxes"] == [(10.0, 12.0, 20.0, 30.0), (50.0, 12.0, 20.0, 30.0)]
    assert store.index.loc[0, "boxes"] == [] and store.index.loc[0, "pixel_spacing"] == (0.14, 0.14)
    assert store.index[["orig_height", "orig_width"]].to_numpy().tolist() == [[96, 96]] * 8
    assert store.index.columns[:6].tolist() == [
        "patientId",
        "label",
        "split",
        "orig_height",
        "orig_width",
        "ok",
    ]
    stats = json.loads((dest / "stats.json").read_text())
    assert stats["n"] == 8 and stats["n_failed"] == 1 and stats["size"] == 32
    assert stats["failed"][0]["path"] == items.at[3, "path"] and "truncated" in stats["failed"][0]["reason"]
    train = np.asarray(store.images)[(store.index["split"] == "train") & store.index["ok"]] / 255.0
    assert store.mean == pytest.approx(train.mean(), abs=1e-12) and store.std == pytest.approx(
        train.std(), abs=1e-12
    )

    images, labels = store.split_arrays("val")
    ok_val = store.index[(store.index["split"] == "val") & store.index["ok"]]
    assert images.shape == (len(ok_val), 32, 32) and labels.dtype == np.int64
    assert labels.tolist() == ok_val["label"].tolist()
    with pytest.raises(ValueError, match="no 'test' split"):
        store.split_arrays("test")


def test_interrupted_build_resumes_to_identical_bytes(tmp_path, monkeypatch):
    items = rsna_store_items(tmp_path)
    reference = build_store(items, tmp_path / "ref", size=32, workers=1, progress=False)
    real, calls = preprocess._read_resized, []

    def dies_after_five(path, size):
        if len(calls) == 5:
            raise KeyboardInterrupt  # like Ctrl-C or a killed kernel in the middle of the build
        calls.append(path)
        return real(path, size)

    monkeypatch.setattr(store_module, "_read_resized", dies_after_five)
    dest = tmp_path / "store"
    with pytest.raises(KeyboardInterrupt):
        build_store(items, dest, size=32, workers=1, progress=False, checkpoint_every=2)
    assert not dest.exists() and (tmp_path / "store.partial" / "progress.npz").is_file()
    with pytest.raises(ValueError, match="not a finished store"):
        load_store(tmp_path / "store.partial")

    calls.clear()
    monkeypatch.setattr(store_module, "_read_resized", lambda p, s: (calls.append(p), real(p, s))[1])
    build_store(items, dest, size=32, workers=1, progress=False)
    assert len(calls) == 3  # only the images not done before the interruption
    assert (dest / "images.npy").read_bytes() == (reference / "images.npy").read_bytes()
    assert (dest / "index.csv").read_bytes() == (reference / "index.csv").read_bytes()


def test_all_cores_give_the_same_bytes_and_finished_stores_are_reused(tmp_path, monkeypatch):
    items = rsna_store_items(tmp_path)
    one = build_store(items, tmp_path / "one", size=32, workers=1, progress=False)
    two = build_store(items, tmp_path / "two", size=32, workers=2, progress=False)
    assert (one / "images.npy").read_bytes() == (two / "images.npy").read_bytes()
    assert (one / "index.csv").read_bytes() == (two / "index.csv").read_bytes()

    monkeypatch.setattr(
        store_module, "_read_resized", lambda p, s: pytest.fail("a finished store was rebuilt")
    )
    assert build_store(items, one, size=32, workers=1, progress=False) == one
    with pytest.raises(ValueError, match="holds a store of other items or size"):
        build_store(items, one, size=16, workers=1, progress=False)


def test_store_without_valid_stats_is_never_taken_as_finished(tmp_path):
    items = rsna_store_items(tmp_path)
    dest = build_store(items, tmp_path / "store", size=32, workers=1, progress=False)
    good = (dest / "images.npy").read_bytes()
    (dest / "stats.json").write_text('{"mean": 0.5')  # cut short
    with pytest.raises(ValueError, match="not a finished store"):
        load_store(dest)
    build_store(items, dest, size=32, workers=1, progress=False)  # rebuilt, not trusted
    assert load_store(dest).stats["n"] == 8 and (dest / "images.npy").read_bytes() == good
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "thesis.docx").write_text("precious")
    with pytest.raises(ValueError, match="exists and is not an unfinished store"):
        build_store(items, tmp_path / "other", size=32, workers=1, progress=False)


def test_export_paper_layout(tmp_path):
    items = rsna_store_items(tmp_path)
    store = load_store(build_store(items, tmp_path / "store", size=32, workers=1, progress=False))
    out = export_paper_layout(store.path, tmp_path / "paper")
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*.npy"))
    ok = store.index[store.index["ok"]]
    assert files == sorted(f"{r.split}/{r.label}/{r.patientId}.npy" for r in ok.itertuples())
    row = ok.iloc[0]
    saved = np.load(out / row["split"] / str(row["label"]) / f"{row['patientId']}.npy")
    assert saved.dtype == np.float16
    np.testing.assert_allclose(saved, store.images[ok.index[0]] / 255.0, atol=1e-3)
    assert not (tmp_path / "paper.partial").exists()


# --- Kermany -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "patient"),
    [
        ("person1_bacteria_1.jpeg", "person1"),
        ("person1_virus_6.jpeg", "person1"),
        ("IM-0115-0001.jpeg", "IM-0115"),
        ("NORMAL2-IM-0372-0001.jpeg", "NORMAL2-IM-0372"),
        ("odd.jpeg", "odd"),
    ],
)
def test_kermany_patient_id(name, patient):
    assert patient_id(name) == patient


def test_kermany_items_keeps_test_and_splits_train_by_patient(tmp_path):
    root = tmp_path / "kermany" / "chest_xray"
    names = {
        "train/NORMAL": [f"IM-{p:04d}-000{k}.jpeg" for p in range(10) for k in (1, 2)],
        "train/PNEUMONIA": [
            f"person{p}_{'bacteria' if p % 2 else 'virus'}_{k}.jpeg" for p in range(10) for k in (1, 2)
        ],
        "val/NORMAL": ["NORMAL2-IM-0001-0001.jpeg"],
        "val/PNEUMONIA": ["person3_bacteria_9.jpeg"],  # a train patient: must stay on one side
        "test/NORMAL": ["IM-0500-0001.jpeg"],
        "test/PNEUMONIA": ["person500_virus_1.jpeg"],
    }
    for folder, files in names.items():
        (root / folder).mkdir(parents=True)
        for name in files:
            Image.new("L", (8, 8)).save(root / folder / name)
    (root / "train" / "NORMAL" / ".DS_Store").write_text("")
    items = kermany_items(tmp_path / "kermany", val_fraction=0.25, seed=0)
    assert len(items) == 44 and items["label"].dtype == np.int64
    assert items.loc[items["official_split"] == "test", "split"].tolist() == ["test", "test"]
    pool = items[items["split"] != "test"]
    assert (pool.groupby("patientId")["split"].nunique() == 1).all()
    val_patients = pool.loc[pool["split"] == "val", ["patientId", "label"]].drop_duplicates()
    assert len(val_patients) == 6 and val_patients["label"].sum() == 3  # 1/4 of 21 patients, stratified
    person3 = items[items["patientId"] == "person3"]
    assert len(person3) == 3 and person3["kind"].unique().tolist() == ["bacteria"]
    with pytest.raises(ValueError, match="no Kermany layout here"):
        kermany_items(tmp_path)
