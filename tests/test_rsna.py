"""Tests of helpers.xray.rsna: the real RSNA label file shipped in torchxrayvision, and hand-written bad files."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from helpers.xray.rsna import load_class_info, load_labels

HEADER = "patientId,x,y,width,height,Target\n"


def real_labels_file() -> Path:
    """The real stage_2_train_labels.csv (zipped) inside the torchxrayvision package, found without importing it."""
    spec = importlib.util.find_spec("torchxrayvision")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("torchxrayvision is not installed")
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "kaggle_stage_2_train_labels.csv.zip"
    if not path.is_file():
        pytest.skip(f"{path} is missing")
    return path


def write(tmp_path: Path, text: str, name: str = "labels.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_real_rsna_label_file():
    labels = load_labels(real_labels_file())
    assert len(labels) == 26_684
    assert int(labels["Target"].sum()) == 6_012
    assert int(labels["boxes"].map(len).sum()) == 9_555
    assert labels["patientId"].is_unique and labels["Target"].dtype == np.int64
    assert labels["patientId"].iloc[0] == "0004cfab-14fd-4e49-80ba-63a80b6bddd6"  # file order kept
    row = labels.set_index("patientId").loc["00436515-870c-4b36-a041-de91049b9ab4"]
    assert row["Target"] == 1
    assert row["boxes"] == [(264.0, 152.0, 213.0, 379.0), (562.0, 152.0, 256.0, 453.0)]
    assert all(b == [] for b in labels.loc[labels["Target"] == 0, "boxes"])


def test_one_row_per_patient_in_order_of_first_appearance(tmp_path):
    path = write(tmp_path, HEADER + "b,,,,,0\na,10,20,30,40,1\nc,,,,,0\na,1.5,2,3,4,1\n")
    labels = load_labels(path)
    assert labels["patientId"].tolist() == ["b", "a", "c"]
    assert labels["Target"].tolist() == [0, 1, 0]
    assert labels["boxes"].tolist() == [[], [(10.0, 20.0, 30.0, 40.0), (1.5, 2.0, 3.0, 4.0)], []]
    assert all(isinstance(v, float) for v in labels["boxes"][1][0])


def test_zipped_csv_reads_like_plain(tmp_path):
    import zipfile

    text = HEADER + "a,1,2,3,4,1\nb,,,,,0\n"
    with zipfile.ZipFile(tmp_path / "labels.csv.zip", "w") as zf:
        zf.writestr("labels.csv", text)
    zipped = load_labels(tmp_path / "labels.csv.zip")
    assert zipped.equals(load_labels(write(tmp_path, text)))


def test_missing_and_extra_columns(tmp_path):
    path = write(tmp_path, "patientId,x,y,w,height,Target,notes\na,1,2,3,4,1,x\n")
    with pytest.raises(ValueError) as info:
        load_labels(path)
    assert str(info.value) == (
        f"{path}: expected columns patientId, x, y, width, height, Target; missing: width; extra: w, notes"
    )


def test_every_problem_is_named_with_its_lines(tmp_path):
    rows = [
        "a,,,,,2",  # line 2: Target not 0/1
        "b,10,20,,40,1",  # line 3: positive without a complete box
        "c,10,20,30,40,0",  # line 4: negative with a box
        "d,10,20,-5,40,1",  # line 5: negative width
        "e,,,,,0",  # line 6 and 7: both 0 and 1
        "e,1,2,3,4,1",
        "f,1,2,3,4,1",  # line 8: fine
    ]
    path = write(tmp_path, HEADER + "\n".join(rows) + "\n")
    with pytest.raises(ValueError) as info:
        load_labels(path)
    assert str(info.value) == (
        f"{path}: Target must be 0 or 1 (lines 2); "
        "positive rows (Target=1) without a complete box (lines 3); "
        "negative rows (Target=0) with box values (lines 4); "
        "boxes need x, y >= 0 and width, height > 0 (lines 5); "
        "patients with both Target 0 and 1 rows: e (lines 6, 7)"
    )


def test_nan_size_and_text_in_box(tmp_path):
    path = write(tmp_path, HEADER + "a,1,2,3,NaN,1\nb,1,2,wide,4,1\n")
    with pytest.raises(ValueError) as info:
        load_labels(path)
    assert str(info.value) == (
        f"{path}: box values must be numbers (lines 3); "
        "positive rows (Target=1) without a complete box (lines 2, 3)"
    )


def test_long_line_lists_are_shortened(tmp_path):
    path = write(tmp_path, HEADER + "".join(f"p{i},,,,,5\n" for i in range(15)))
    with pytest.raises(ValueError, match=r"lines 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, \.\.\. \(15 lines in all\)"):
        load_labels(path)


def test_missing_file_and_empty_id(tmp_path):
    with pytest.raises(ValueError, match=r"nope\.csv: file not found"):
        load_labels(tmp_path / "nope.csv")
    path = write(tmp_path, HEADER + "a,,,,,0\n,,,,,0\n")
    with pytest.raises(ValueError, match=r"labels\.csv: empty patientId on lines 3$"):
        load_labels(path)


def test_class_info_deduplicated(tmp_path):
    text = "patientId,class\na,Lung Opacity\na,Lung Opacity\nb,Normal\nc,No Lung Opacity / Not Normal\nb,Normal\n"
    info = load_class_info(write(tmp_path, text, "classes.csv"))
    assert info.to_dict("list") == {
        "patientId": ["a", "b", "c"],
        "class": ["Lung Opacity", "Normal", "No Lung Opacity / Not Normal"],
    }


def test_class_info_unknown_class_and_conflict(tmp_path):
    path = write(tmp_path, "patientId,class\na,Normal\nb,Pneumonia\n", "classes.csv")
    with pytest.raises(ValueError) as info:
        load_class_info(path)
    assert str(info.value).startswith(f"{path}: unknown class 'Pneumonia' (lines 3); expected one of")
    path = write(tmp_path, "patientId,class\na,Normal\na,Lung Opacity\nb,Normal\n", "classes.csv")
    with pytest.raises(ValueError) as info:
        load_class_info(path)
    assert str(info.value) == f"{path}: patients with more than one class: a (1 in all)"
    with pytest.raises(ValueError, match="missing: class; extra: label"):
        load_class_info(write(tmp_path, "patientId,label\na,1\n", "classes.csv"))


# --- files that used to be misread (issue 19) ----------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        HEADER + "a,10,20,30,40,1,\nb,,,,,0,\n",  # a trailing comma on every row
        HEADER.replace("\n", ",\n") + "a,10,20,30,40,1,\nb,,,,,0,\n",  # and on the header: an empty column
        HEADER + "a,10,20,30,40,1\nb,,,,,0\n,,,,,\n,\n\n",  # trailing lines of commas and blank lines
        HEADER + "\na,10,20,30,40,1\n\nb,,,,,0",  # blank lines inside, no newline at the end
    ],
)
def test_trailing_commas_and_blank_lines_read_like_a_clean_file(tmp_path, text):
    clean = load_labels(write(tmp_path, HEADER + "a,10,20,30,40,1\nb,,,,,0\n", "clean.csv"))
    assert load_labels(write(tmp_path, text)).equals(clean)


def test_line_numbers_count_blank_lines_and_extra_fields_are_refused(tmp_path):
    path = write(tmp_path, HEADER + "a,1,2,3,4,1\n\nb,1,2,3,4,7\n")
    with pytest.raises(ValueError, match=r"labels\.csv: Target must be 0 or 1 \(lines 4\)$"):
        load_labels(path)
    path = write(tmp_path, HEADER + "a,1,2,3,4,1\nb,,,,,0,oops\n")
    with pytest.raises(ValueError) as info:
        load_labels(path)
    assert str(info.value) == f"{path}: line 3 has 7 fields; the header names 6"


def test_non_finite_and_out_of_image_boxes_are_refused_with_their_lines(tmp_path):
    rows = ["a,inf,2,3,4,1", "b,1,2,1e400,4,1", "c,1,-inf,3,4,1", "d,1000,2,30,4,1", "e,1,2,3,4,1"]
    path = write(tmp_path, HEADER + "\n".join(rows) + "\n")
    with pytest.raises(ValueError) as info:
        load_labels(path)
    assert str(info.value) == (
        f"{path}: box values must be finite (lines 2, 3, 4); "
        "boxes must lie inside the 1024 x 1024 image: x + width <= 1024, y + height <= 1024 (lines 5)"
    )
    path = write(tmp_path, HEADER + "a,10,20,30,40,1\nb,100,2,3,4,1\n")
    with pytest.raises(ValueError, match=r"inside the 50 x 200 image: .* \(lines 2\)$"):
        load_labels(path, image_size=(50, 200))
    assert len(load_labels(path, image_size=None)) == 2


def test_exact_duplicate_rows_are_dropped_with_a_warning(tmp_path):
    path = write(tmp_path, HEADER + "a,10,20,30,40,1\nb,,,,,0\na,10,20,30,40,1\na,1,2,3,4,1\n")
    with pytest.warns(UserWarning, match=r"labels\.csv: dropped 1 exact duplicate rows \(lines 4\)"):
        labels = load_labels(path)
    assert labels.set_index("patientId").at["a", "boxes"] == [(10.0, 20.0, 30.0, 40.0), (1.0, 2.0, 3.0, 4.0)]


def test_spaces_around_ids_and_fields_are_stripped(tmp_path):
    labels = load_labels(write(tmp_path, HEADER + "a ,1,2,3,4,1\n  a, 5 ,6,7,8 ,1\nb,,,,,0\n"))
    assert labels["patientId"].tolist() == ["a", "b"]
    assert labels.at[0, "boxes"] == [(1.0, 2.0, 3.0, 4.0), (5.0, 6.0, 7.0, 8.0)]
    info = load_class_info(write(tmp_path, "patientId,class\na , Normal \na,Normal\n", "classes.csv"))
    assert info.to_dict("list") == {"patientId": ["a"], "class": ["Normal"]}


def test_header_only_and_empty_files_are_refused(tmp_path):
    path = write(tmp_path, HEADER)
    with pytest.raises(ValueError) as info:
        load_labels(path)
    assert str(info.value) == f"{path}: no rows (only a header line)"
    with pytest.raises(ValueError, match=r"labels\.csv: empty file \(no header line\)$"):
        load_labels(write(tmp_path, "\n"))


def test_bad_zip_files_are_named_with_the_reason(tmp_path):
    import zipfile

    path = tmp_path / "labels.csv.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("a.csv", HEADER + "a,,,,,0\n")
        zf.writestr("b.csv", HEADER + "b,,,,,0\n")
    with pytest.raises(ValueError) as info:
        load_labels(path)
    assert str(info.value) == f"{path}: holds 2 CSV files: a.csv, b.csv; expected one"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("notes.txt", "nothing here")
    with pytest.raises(ValueError, match=r"holds 0 CSV files \(it holds: notes\.txt\); expected one$"):
        load_labels(path)
    path.write_text(HEADER + "a,,,,,0\n")  # a plain CSV under a .zip name
    with pytest.raises(ValueError, match=r"labels\.csv\.zip: is not a zip file"):
        load_labels(path)
