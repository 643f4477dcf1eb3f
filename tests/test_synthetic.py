"""The built-in synthetic data sets: real formats, real label structure, planted signal, determinism, resume."""

from __future__ import annotations

import hashlib
import io
import os
import re
from math import gcd
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
import soundfile as sf
from PIL import Image
from pydicom.encaps import generate_frames
from scipy.signal import resample_poly, stft

from helpers.data import synthetic, synthetic_audio
from helpers.data.real_tables import real_rsna_tables
from helpers.data.synthetic_xray import MARKER_VALUE, burn_marker, draw_radiograph, marker_strokes

SIZE = 128


@pytest.fixture(scope="module")
def real():
    labels, headers = real_rsna_tables()
    return labels, headers.set_index("PatientID")


@pytest.fixture(scope="module")
def rsna(tmp_path_factory):
    """40 patients at 128 px with the confounding marker."""
    dest = tmp_path_factory.mktemp("rsna")
    return synthetic.make_rsna_like(dest, 40, image_size=SIZE, seed=3, confounder=True, workers=1)


@pytest.fixture(scope="module")
def rsna_images(rsna):
    files = sorted((rsna / "stage_2_train_images").glob("*.dcm"))
    return {f.stem: pydicom.dcmread(f).pixel_array for f in files}


def digests(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


# ------------------------------------------------------------------------------------------------ RSNA
def test_dicom_header_matches_the_rsna_files_and_the_real_metadata(rsna, real):
    labels = pd.read_csv(rsna / "stage_2_train_labels.csv")
    pid = labels.loc[labels["Target"] == 1, "patientId"].iloc[0]
    path = rsna / "stage_2_train_images" / f"{pid}.dcm"
    assert path.read_bytes()[128:132] == b"DICM"
    ds = pydicom.dcmread(path)
    assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.50"
    assert ds.file_meta.MediaStorageSOPClassUID == ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.7"
    assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    assert (ds.Modality, ds.ConversionType, ds.BodyPartExamined) == ("CR", "WSD", "CHEST")
    assert (ds.PhotometricInterpretation, ds.SamplesPerPixel) == ("MONOCHROME2", 1)
    assert (ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation) == (8, 8, 7, 0)
    assert (ds.Rows, ds.Columns) == (SIZE, SIZE)
    assert ds.PatientID == str(ds.PatientName) == pid
    header = real[1].loc[pid]
    assert ds.PatientAge == str(int(header["PatientAge"])) and ds.PatientAge.isdigit()
    assert ds.PatientSex == header["PatientSex"]
    assert ds.ViewPosition == header["ViewPosition"] and ds.SeriesDescription == f"view: {ds.ViewPosition}"
    spacing = header["PixelSpacing"] * 1024 / SIZE
    assert [float(v) for v in ds.PixelSpacing] == pytest.approx([spacing, spacing], rel=1e-5)
    assert (ds.StudyDate, ds.StudyTime) == ("19010101", "000000.00")
    assert ds.LossyImageCompression == "01" and ds["PixelData"].is_undefined_length


def test_pixels_decode_with_pydicom_and_pillow_to_the_same_image(rsna):
    path = next((rsna / "stage_2_train_images").glob("*.dcm"))
    ds = pydicom.dcmread(path)
    array = ds.pixel_array
    assert array.shape == (SIZE, SIZE) and array.dtype == np.uint8
    frame = next(generate_frames(ds.PixelData, number_of_frames=1))
    jpeg = Image.open(io.BytesIO(frame))
    assert (jpeg.format, jpeg.mode, jpeg.size) == ("JPEG", "L", (SIZE, SIZE))
    # pydicom may pick another JPEG decoder (pylibjpeg): IDCT rounding differs by at most a grey level or two
    assert np.abs(np.asarray(jpeg, dtype=int) - array).max() <= 2
    assert 20 < array.mean() < 200 and array.std() > 20  # a radiograph, not a blank frame


def test_label_csvs_have_the_real_columns_rows_and_scaled_boxes(rsna, real):
    text = (rsna / "stage_2_train_labels.csv").read_text().splitlines()
    assert text[0] == "patientId,x,y,width,height,Target"
    labels = pd.read_csv(rsna / "stage_2_train_labels.csv")
    negatives = [line for line in text[1:] if line.endswith(",0")]
    assert negatives and all(re.fullmatch(r"[0-9a-f-]{36},,,,,0", line) for line in negatives)
    ids = set(labels["patientId"])
    assert ids == {p.stem for p in (rsna / "stage_2_train_images").glob("*.dcm")} and len(ids) == 40
    original = real[0][real[0]["patientId"].isin(ids)].reset_index(drop=True)
    assert len(labels) == len(original)  # every box of every sampled patient, in the real order
    assert list(labels["patientId"]) == list(original["patientId"])
    cols = ["x", "y", "width", "height"]
    np.testing.assert_allclose(labels[cols].to_numpy(), original[cols].to_numpy() * SIZE / 1024)
    classes = pd.read_csv(rsna / "stage_2_detailed_class_info.csv")
    assert list(classes.columns) == ["patientId", "class"] and len(classes) == len(labels)
    assert set(classes["class"]) <= set(synthetic.RSNA_CLASSES)
    assert ((classes["class"] == "Lung Opacity") == (labels["Target"] == 1)).all()


def test_sampling_keeps_the_real_class_balance_metadata_and_impossible_ages(real):
    rows, meta = synthetic.sample_rsna_patients(3000, seed=0)
    positive = (meta["class"] == "Lung Opacity").mean()
    assert 0.19 < positive < 0.26  # real: 22.5 %
    negatives = meta[meta["class"] != "Lung Opacity"]
    assert 0.52 < (negatives["class"] == "No Lung Opacity / Not Normal").mean() < 0.62  # real: 57 %
    pd.testing.assert_series_equal(meta["PatientAge"], real[1].loc[meta.index, "PatientAge"])
    small_rows, small = synthetic.sample_rsna_patients(100, seed=0)
    assert set(small.index) <= set(meta.index)  # a larger set contains the smaller one
    _, everyone = synthetic.sample_rsna_patients(26684, seed=0)
    assert (everyone["PatientAge"] > 100).sum() == 5  # kept, as in the real headers
    with pytest.raises(ValueError, match="n_patients must be between 1 and 26684"):
        synthetic.sample_rsna_patients(26685)


def test_opacities_are_planted_inside_the_boxes(rsna, rsna_images):
    labels = pd.read_csv(rsna / "stage_2_train_labels.csv")
    negatives = [p for p, t in labels.groupby("patientId")["Target"].max().items() if t == 0]
    gaps = []
    for box in labels.dropna().itertuples():
        y0, y1, x0, x1 = int(box.y), int(box.y + box.height), int(box.x), int(box.x + box.width)
        same_region = np.mean([rsna_images[p][y0:y1, x0:x1].mean() for p in negatives])
        gaps.append(rsna_images[box.patientId][y0:y1, x0:x1].mean() - same_region)
    assert len(gaps) >= 8 and np.mean(gaps) > 12 and np.mean(np.array(gaps) > 0) > 0.8


def test_confounder_marker_is_on_every_positive_and_no_negative(rsna, rsna_images):
    target = pd.read_csv(rsna / "stage_2_train_labels.csv").groupby("patientId")["Target"].max()
    strokes = marker_strokes(SIZE)
    for x, y, w, h in strokes:  # both strokes of the 'L', each bright on positives only
        stroke = {p: rsna_images[p][y : y + h, x : x + w].mean() for p in target.index}
        assert all((stroke[p] > 200) == bool(target[p]) for p in target.index), (x, y, w, h)
        assert max(stroke[p] for p in target.index if not target[p]) < 60
    assert target.sum() >= 5


def marker_mask(shape: tuple[int, int]) -> np.ndarray:
    mask = np.zeros(shape, bool)
    for x, y, w, h in marker_strokes(shape[1]):
        mask[y : y + h, x : x + w] = True
    return mask


def test_marker_strokes_make_an_l_in_the_top_left_corner():
    # 6 % of the width (at least 4 px) a side, 3 % in, strokes a quarter of the size thick (as before)
    assert marker_strokes(256) == [(8, 8, 3, 15), (8, 20, 11, 3)]
    assert marker_strokes(1024) == [(31, 31, 15, 61), (31, 77, 45, 15)]
    assert marker_strokes(32) == [(1, 1, 1, 4), (1, 4, 3, 1)]
    for width in (32, 64, 128, 300, 600, 1024):
        (vx, vy, vw, vh), (hx, hy, hw, hh) = marker_strokes(width)
        assert (vx, vy) == (hx, hy + hh - vh) and vx == vy  # the foot starts at the bottom of the upright
        assert vh > vw and hw > hh and hw >= vw  # a tall upright and a wide foot
        assert vx + hw < width / 4 and vy + vh < width / 4  # in the top-left corner


@pytest.mark.parametrize("shape", [(64, 64), (128, 128), (300, 400), (1024, 1024)])
def test_burn_marker_paints_exactly_the_strokes(shape):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 200, size=shape, dtype=np.uint8)
    before = image.copy()
    burn_marker(image)
    mask = marker_mask(shape)  # strokes sized by the width, shape[1]
    assert (image[mask] == MARKER_VALUE).all()
    np.testing.assert_array_equal(image[~mask], before[~mask])
    (_, _, vw, vh), (_, _, hw, hh) = marker_strokes(shape[1])
    assert mask.sum() == vw * vh + hw * hh - vw * hh  # the two strokes share one square


def test_draw_radiograph_with_a_marker_differs_only_in_the_strokes():
    for size, width in ((128, None), (96, 130)):
        plain = draw_radiograph(np.random.default_rng(4), size, width=width)
        marked = draw_radiograph(np.random.default_rng(4), size, width=width, marker=True)
        mask = marker_mask(marked.shape)
        assert (marked[mask] == MARKER_VALUE).all()
        np.testing.assert_array_equal(marked[~mask], plain[~mask])


def test_same_seed_gives_byte_identical_files_whatever_the_workers(tmp_path):
    a = synthetic.make_rsna_like(tmp_path / "a", 20, image_size=64, seed=5, workers=1)
    b = synthetic.make_rsna_like(tmp_path / "b", 20, image_size=64, seed=5, workers=2)
    assert len(digests(a)) == 20 + 3 and digests(a) == digests(b)
    c = synthetic.make_rsna_like(tmp_path / "c", 20, image_size=64, seed=6, workers=1)
    assert digests(c)["stage_2_train_labels.csv"] != digests(a)["stage_2_train_labels.csv"]


def test_rerun_rewrites_only_the_missing_file_and_refuses_other_arguments(tmp_path):
    dest = synthetic.make_rsna_like(tmp_path / "set", 8, image_size=64, seed=1, workers=1)
    before = {
        p: (p.stat().st_ino, p.stat().st_mtime_ns, p.read_bytes()) for p in dest.rglob("*") if p.is_file()
    }
    victim = sorted((dest / "stage_2_train_images").glob("*.dcm"))[3]
    victim.unlink()
    stale = dest / "stage_2_train_images" / ".half.dcm.999.tmp"
    stale.write_bytes(b"killed mid-write")
    os.utime(stale, (1e9, 1e9))  # long ago: left by a killed run, not being written by a live one
    fresh = dest / ".other.dcm.998.tmp"
    fresh.write_bytes(b"another process is writing this right now")
    synthetic.make_rsna_like(dest, 8, image_size=64, seed=1, workers=1)
    after = {
        p: (p.stat().st_ino, p.stat().st_mtime_ns, p.read_bytes()) for p in dest.rglob("*") if p.is_file()
    }
    assert set(after) == set(before) | {fresh} and not stale.exists()
    after.pop(fresh)
    assert [p for p in after if after[p] != before[p]] == [victim]
    assert after[victim][2] == before[victim][2]
    with pytest.raises(ValueError, match=r"already holds a synthetic set made with other arguments"):
        synthetic.make_rsna_like(dest, 8, image_size=32, seed=1, workers=1)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="image_size must be at least 32 pixels, got 16"):
        synthetic.make_rsna_like("unused", 4, image_size=16)
    with pytest.raises(ValueError, match="n_per_class must be at least 1, got 0"):
        synthetic.make_kermany_like("unused", n_per_class=0)
    with pytest.raises(ValueError, match="duration_s must be a range"):
        synthetic_audio.make_icbhi_like("unused", 2, duration_s=(1.0, 2.0))


# --------------------------------------------------------------------------------------------- Kermany
def test_kermany_layout_names_sizes_and_persons(tmp_path):
    dest = synthetic.make_kermany_like(tmp_path / "k", n_per_class=8, seed=0)
    persons = {}
    for split in ("train", "val", "test"):
        for label, pattern in (
            ("NORMAL", r"(NORMAL2-)?IM-(\d{4})-\d{4}\.jpeg"),
            ("PNEUMONIA", r"person(\d+)_(bacteria|virus)_\d+\.jpeg"),
        ):
            files = sorted((dest / "chest_xray" / split / label).iterdir())
            assert len(files) == 8, (split, label)
            matches = [re.fullmatch(pattern, f.name) for f in files]
            assert all(matches), [f.name for f in files]
            ids = {m.group(2) if label == "NORMAL" else m.group(1) for m in matches}
            assert len(ids) < len(files)  # several images per person
            persons[split, label] = ids
            with Image.open(files[0]) as image:
                assert image.format == "JPEG" and image.mode == "L"
                assert 300 <= min(image.size) and max(image.size) <= 600
    for label in ("NORMAL", "PNEUMONIA"):
        assert not persons["train", label] & persons["test", label]
    assert (dest / synthetic.KERMANY_MARKER).is_file()


# ----------------------------------------------------------------------------------------------- ICBHI
@pytest.fixture(scope="module")
def icbhi(tmp_path_factory):
    return synthetic_audio.make_icbhi_like(tmp_path_factory.mktemp("icbhi"), 4, seed=0, duration_s=(5.0, 7.0))


def test_icbhi_layout_tables_and_annotations(icbhi):
    wavs = sorted((icbhi / "ICBHI_final_database").glob("*.wav"))
    name = r"(\d{3})_\db\d_(Tc|Al|Ar|Pl|Pr|Ll|Lr)_(sc|mc)_(AKGC417L|LittC2SE|Litt3200|Meditron)"
    assert wavs and all(re.fullmatch(name, w.stem) for w in wavs)
    diagnosis = (icbhi / "ICBHI_Challenge_diagnosis.txt").read_text().splitlines()
    assert [line.split("\t")[0] for line in diagnosis] == ["101", "102", "103", "104"]
    assert all(line.split("\t")[1] in synthetic_audio.DIAGNOSES for line in diagnosis)
    split = dict(
        line.split("\t") for line in (icbhi / "ICBHI_challenge_train_test.txt").read_text().splitlines()
    )
    assert set(split) == {w.stem for w in wavs} and set(split.values()) == {"train", "test"}
    for wav in wavs:
        lines = wav.with_suffix(".txt").read_text().splitlines()
        assert lines and all(re.fullmatch(r"\d+\.\d{3}\t\d+\.\d{3}\t[01]\t[01]", line) for line in lines)
        table = np.loadtxt(wav.with_suffix(".txt"), delimiter="\t", ndmin=2)
        assert np.all((table[:, 1] - table[:, 0] >= 2.5) & (table[:, 1] - table[:, 0] <= 5.0))
        assert np.all(table[1:, 0] == table[:-1, 1]) and table[-1, 1] <= sf.info(wav).duration


def test_icbhi_sample_rates_are_mixed_and_4_khz_has_nothing_above_2_khz(icbhi):
    wavs = sorted((icbhi / "ICBHI_final_database").glob("*.wav"))
    rates = {w: sf.info(w).samplerate for w in wavs}
    assert {4000, 44100} <= set(rates.values())
    plan = synthetic_audio.plan_icbhi(40, seed=0, duration_s=(8.0, 20.0))
    assert {"PCM_16", "PCM_24"} <= {rec["subtype"] for rec in plan}
    for wav, rate in rates.items():
        y = resample_poly(sf.read(wav)[0], 16000 // gcd(16000, rate), rate // gcd(16000, rate))  # to 16 kHz
        power = np.abs(np.fft.rfft(y)) ** 2
        above = power[np.fft.rfftfreq(len(y), 1 / 16000) > 2100].sum() / power.sum()
        if rate == 4000:  # at 16 kHz, the band above 2 kHz is blank for these files (the log-mel lesson)
            assert above < 1e-4, (wav.name, above)
        else:  # wide-band devices do record something there
            assert above > 1e-3, (wav.name, above)


def tonality(part: np.ndarray, rate: int) -> tuple[float, float]:
    """Strongest tone of a segment: (peak / median of the bins around it, its frequency), over 64 ms frames."""
    freqs, _, frames = stft(part, fs=rate, nperseg=int(0.064 * rate))
    band = np.flatnonzero((freqs > 50) & (freqs < 1900))
    best = (0.0, 0.0)
    for column in np.abs(frames[band]).T:
        p = int(np.argmax(column))
        ring = np.r_[column[max(0, p - 10) : max(0, p - 2)], column[p + 3 : p + 11]]
        best = max(best, (column[p] / np.median(ring), freqs[band][p]))
    return best


@pytest.mark.parametrize("rate", [4000, 44100])
def test_planted_wheezes_and_crackles_are_in_the_flagged_cycles(rate):
    rec = {"keys": (0, 9, 9, 9), "rate": rate, "duration": 40.0, "diagnosis": "COPD"}
    y, rows = synthetic_audio.synthesize_recording(rec)
    assert {(c, w) for _, _, c, w in rows} >= {(0, 0), (1, 0), (0, 1)}
    parts = [y[int(start * rate) : int(end * rate)] for start, end, _, _ in rows]
    loudest_without_crackles = max(np.abs(p).max() for p, row in zip(parts, rows, strict=True) if not row[2])
    for part, (start, _, crackles, wheezes) in zip(parts, rows, strict=True):
        ratio, freq = tonality(part, rate)
        if wheezes:  # a tone far above its neighbouring bins, in 100-1000 Hz
            assert ratio > 12 and 100 <= freq <= 1000, (start, ratio, freq)
        else:
            assert ratio < 10, (start, ratio, freq)
        if crackles:  # transients well above the loudest breathing (and wheezing) of the recording
            assert np.abs(part).max() > 1.5 * loudest_without_crackles, start


def test_cycle_mix_matches_icbhi_over_the_diagnosis_mix():
    share = synthetic_audio.DIAGNOSES
    total = sum(share.values())
    marginal = {"crackle": 0.0, "wheeze": 0.0, "both": 0.0}
    for diagnosis, p in share.items():
        mix = synthetic_audio.CYCLES_WELL if diagnosis in synthetic_audio.WELL else synthetic_audio.CYCLES_ILL
        marginal["crackle"] += p / total * (mix[1, 0] + mix[1, 1])
        marginal["wheeze"] += p / total * (mix[0, 1] + mix[1, 1])
        marginal["both"] += p / total * mix[1, 1]
    assert marginal["crackle"] == pytest.approx(0.35, abs=0.03)
    assert marginal["wheeze"] == pytest.approx(0.20, abs=0.03)
    assert marginal["both"] == pytest.approx(0.10, abs=0.02)


def test_icbhi_is_deterministic_and_resumes(icbhi, tmp_path):
    copy = synthetic_audio.make_icbhi_like(tmp_path / "again", 4, seed=0, duration_s=(5.0, 7.0))
    assert digests(copy) == digests(icbhi)
    victim = sorted((copy / "ICBHI_final_database").glob("*.wav"))[0]
    stamps = {p: p.stat().st_mtime_ns for p in copy.rglob("*") if p.is_file() and p != victim}
    victim.unlink()
    synthetic_audio.make_icbhi_like(copy, 4, seed=0, duration_s=(5.0, 7.0))
    assert digests(copy) == digests(icbhi)
    assert stamps == {p: p.stat().st_mtime_ns for p in copy.rglob("*") if p.is_file() and p != victim}


def test_icbhi_official_split_shares_patients_like_the_real_one(icbhi):
    split = dict(
        line.split("\t") for line in (icbhi / "ICBHI_challenge_train_test.txt").read_text().splitlines()
    )
    sides: dict[str, set[str]] = {}
    for name, side in split.items():
        sides.setdefault(name.split("_")[0], set()).add(side)
    assert sum(len(s) == 2 for s in sides.values()) == 1  # one of 4 patients on both sides
    plan = synthetic_audio.plan_icbhi(40, seed=0, duration_s=(8.0, 20.0))
    per_patient: dict[int, set[str]] = {}
    for rec in plan:
        per_patient.setdefault(rec["patient"], set()).add(rec["split"])
    assert sum(len(s) == 2 for s in per_patient.values()) == 2  # like patients 156 and 218 of the real set
    counts = np.bincount([rec["patient"] for rec in plan])[101:]
    assert counts.min() >= 2 and counts.max() <= 6
