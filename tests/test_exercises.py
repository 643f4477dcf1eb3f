"""Every checked exercise has a worked solution that passes its check, and a wrong answer gets a hint.

An exercise that takes an input (the notebook passes its own values as keyword arguments) is tried on more
than one: the solution file's ``example_context`` and the inputs of ``MORE_CONTEXTS`` below, so that an
answer (or a reference) right for one input only, e.g. ``image_size // 32`` that fits 224 px but not 100 px,
is caught.
"""

from __future__ import annotations

import importlib.util
import inspect
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from helpers.breath import audio
from helpers.exercises import checks
from helpers.explain.faithfulness import FaithfulnessResult
from helpers.training import models

ROOT = Path(__file__).resolve().parents[1]
SOLUTION_FILES = sorted((ROOT / "solutions").glob("[0-9][0-9]_*.py"))
#: Image sizes for the exercises about ResNet18's layer4, and the side of its maps (ceil(S / 32)).
LAYER4_SIDES = {64: 2, 100: 4, 160: 5, 224: 7, 512: 16}

_TOY = np.array([[[3, 1, 0], [2, 2, 0], [1, 0, 0]], [[0, 1, 2], [0, 2, 4], [1, 3, 5]]], dtype=np.float32)
_FEATURES = np.random.default_rng(7).normal(size=(3, 4, 5)).round(2)
_Y = np.array([1, 0, 1, 1, 0, 0, 1, 0, 0, 1, 0, 0])
_PROB = np.array([0.8, 0.3, 0.55, 0.9, 0.6, 0.1, 0.35, 0.2, 0.45, 0.7, 0.05, 0.5])
_FRACTIONS = np.linspace(0, 1, 4)
_CURVES = np.array([[0.9, 0.4, 0.1, 0.0], [0.8, 0.7, 0.2, 0.1], [0.7, 0.2, 0.2, 0.0]])
_RANDOM = np.array([[0.9, 0.8, 0.5, 0.0], [0.8, 0.6, 0.5, 0.1], [0.7, 0.7, 0.3, 0.0]])
_LEVEL = np.r_[np.linspace(-4.5, -2.0, 8), np.linspace(-3.0, -1.0, 8)]

#: Inputs tried beside each solution file's ``example_context``, keyed ``"NN.name"``. Every exercise whose
#: reference takes an input has an entry (checked below); the keys are the reference's parameters.
MORE_CONTEXTS: dict[str, list[dict]] = {
    "01.monochrome1_value": [
        {"stored": 0, "bits_stored": 12},
        {"stored": 4095, "bits_stored": 12},
        {"stored": 200, "bits_stored": 8},
        {"stored": 40_000, "bits_stored": 16},
    ],
    "01.ap_risk_ratio": [
        {
            "meta": pd.DataFrame(
                {"view_position": ["AP"] * 5 + ["PA"] * 4, "Target": [1, 1, 1, 0, 0, 1, 0, 0, 0]}
            )
        },
        {"meta": pd.DataFrame({"view_position": ["PA", "AP", "PA", "AP"], "Target": [1, 1, 0, 1]})},
    ],
    "01.nyquist": [
        {"original": 1024, "size": 512},
        {"original": 2000, "size": 224},
        {"original": 600, "size": 600},
    ],
    "01.std_from_sums": [
        {"n": 3, "sum_x": 1.5, "sum_x2": 0.5 + 0.25 + 0.0},  # 1.0, 0.5, 0.0 -> sqrt(1/6)
        {"n": 4, "sum_x": 2.0, "sum_x2": 1.0},  # 0.5 everywhere -> 0
    ],
    "01.leaked_fraction": [
        {
            "items": pd.DataFrame(
                {"patientId": ["a", "b", "c", "a", "b", "d", "e"], "image_split": ["train"] * 3 + ["val"] * 4}
            )
        },  # a and b leak: 2 of the 4 val images
        {
            "items": pd.DataFrame({"patientId": ["a", "b", "c"], "image_split": ["train", "val", "val"]})
        },  # none
    ],
    "02.layer4_cells": [{"image_size": s} for s in (100, 160, 224, 512)],
    "02.fc_parameters": [{"n_classes": 1}, {"n_classes": 2}, {"n_classes": 14}],
    "02.pos_weight": [{"n_positive": 6012, "n_total": 26684}, {"n_positive": 1, "n_total": 2}],
    "02.weighted_loss": [
        {"logit": 2.0, "label": 0, "pos_weight": 3.0},  # a negative: the pos_weight does not apply
        {"logit": 0.5, "label": 1, "pos_weight": 1.0},
        {"logit": -3.0, "label": 0, "pos_weight": 10.0},
    ],
    "02.best_epoch": [
        {"history": pd.DataFrame({"epoch": [1, 2, 3, 4, 5], "best": [True, False, True, True, False]})},
        {"history": pd.DataFrame({"epoch": [1, 2, 3], "best": [True, True, True]})},
    ],
    "03.ppv_at_prevalence": [
        {"sensitivity": 0.9, "specificity": 0.8, "prevalence": 4664 / 12173},  # the AP films
        {"sensitivity": 0.5, "specificity": 0.99, "prevalence": 0.01},
    ],
    "03.youden_threshold": [
        {"y": _Y, "prob": _PROB},
        {"y": np.array([0, 1, 0, 1, 1, 0]), "prob": np.array([0.2, 0.3, 0.4, 0.6, 0.9, 0.7])},
    ],
    "03.positives_needed": [
        {"sensitivity": 0.8, "half_width": 0.1},
        {"sensitivity": 0.95, "half_width": 0.02},
    ],
    "03.view_only_auc": [
        {"y": _Y, "view": np.where(_PROB > 0.4, "AP", "PA")},
        {"y": np.array([1, 1, 0, 0, 0]), "view": np.array(["AP", "PA", "PA", "PA", "AP"])},
    ],
    "03.brier_of_constant": [{"prevalence": 0.5}, {"prevalence": 0.1}, {"prevalence": 1348 / 14511}],
    "04.cam_value": [
        {"features": _TOY, "weights": (2.0, -0.5), "row": 2, "col": 0},
        {"features": _FEATURES, "weights": (0.5, -1.0, 2.0), "row": 3, "col": 4},
    ],
    "04.logit_from_cam": [
        {"features": _TOY, "weights": (2.0, -0.5), "bias": 0.5},
        {"features": _FEATURES, "weights": (0.5, -1.0, 2.0), "bias": -0.25},
    ],
    "04.hw_factor": [{"image_size": s} for s in (100, 160, 512)],
    "04.negative_region": [
        {"features": _TOY, "weights": (-1.0, 1.0)},  # M = A_2 - A_1: smallest at (0, 0)
        {"features": _FEATURES, "weights": (0.5, -1.0, 2.0)},
    ],
    "04.upsample_values": [
        {"values": (1.0, 3.0, 2.0), "size": 7},
        {"values": (0.0, 1.0, 4.0, 9.0), "size": 6},
        {"values": (5.0,), "size": 3},
    ],
    "05.layer4_cells": [{"image_size": s} for s in (100, 160, 512)],
    "05.box_area_baseline": [
        {"boxes_list": [[(0, 0, 10, 5)], [(5, 0, 10, 10), (10, 5, 10, 5)]], "height": 10, "width": 20},
        {"boxes_list": [[(1, 1, 2, 2)], [], [(0, 0, 4, 4), (0, 0, 4, 4)]], "height": 4, "width": 4},
    ],
    "05.ap_pa_ratio": [
        {
            "labels": pd.DataFrame({"patientId": list("aabcdeeg"), "Target": [1, 1, 0, 0, 1, 1, 1, 0]}),
            "headers": pd.DataFrame(
                {"PatientID": list("abcdeg"), "ViewPosition": ["AP", "AP", "PA", "AP", "PA", "PA"]}
            ),
        },
    ],
    "05.deletion_gap": [
        {"result": FaithfulnessResult(_FRACTIONS, _CURVES, _RANDOM[:, ::-1], _RANDOM, _CURVES[:, ::-1])},
        {"result": FaithfulnessResult(_FRACTIONS, _RANDOM, _CURVES[:, ::-1], _CURVES, _RANDOM[:, ::-1])},
    ],
    "06.n_patches": [{"duration": d} for d in (0.01, 0.96, 0.975, 5.5, 30.0)],
    "06.icbhi_score": [
        {"y_true": np.array([0, 1, 2, 3, 0, 0]), "y_pred": np.array([0, 1, 2, 3, 0, 0])},
        {"y_true": np.array([0, 0, 1, 2, 3]), "y_pred": np.array([1, 1, 3, 2, 0])},
    ],
    "06.heat_share": [
        {"profile": np.ones(64), "centres": audio.mel_center_frequencies()},  # flat: 10 / 64
        {"profile": np.linspace(0.0, 1.0, 48), "centres": audio.mel_center_frequencies(48, 50.0, 4000.0)},
    ],
    "06.device_rule": [
        {"level": _LEVEL, "is_4k": np.arange(16) < 8, "threshold": -2.5},
        {"level": _LEVEL, "is_4k": np.arange(16) < 8, "threshold": -1.5},
    ],
}


def load_solutions(path: Path):
    spec = importlib.util.spec_from_file_location(f"solutions_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def exercise_keys() -> list[tuple[Path, str, str]]:
    return [
        (path, path.name[:2], name) for path in SOLUTION_FILES for name in checks._exercises(path.name[:2])
    ]


def cases():
    for path, notebook, name in exercise_keys():
        # input 0: the solution file's example_context; 1, 2, ...: MORE_CONTEXTS
        for index in range(1 + len(MORE_CONTEXTS.get(f"{notebook}.{name}", []))):
            yield pytest.param(path, notebook, name, index, id=f"{notebook}.{name}-{index}")


def test_every_notebook_with_exercises_has_a_solutions_file():
    registered = {p.stem[2:] for p in (ROOT / "helpers" / "exercises").glob("ex[0-9][0-9].py")}
    with_solutions = {p.name[:2] for p in SOLUTION_FILES}
    assert registered <= with_solutions, f"exercises without solutions: {sorted(registered - with_solutions)}"


def test_every_exercise_that_takes_an_input_is_tried_on_several():
    keys = set()
    for _, notebook, name in exercise_keys():
        key = f"{notebook}.{name}"
        keys.add(key)
        parameters = set(inspect.signature(checks.get_exercise(key).reference).parameters)
        more = MORE_CONTEXTS.get(key, [])
        if parameters:
            assert more, f"{key} takes {sorted(parameters)} but is tried on one input only"
        for context in more:
            assert set(context) == parameters, (key, sorted(context), sorted(parameters))
    assert set(MORE_CONTEXTS) <= keys, f"no such exercises: {sorted(set(MORE_CONTEXTS) - keys)}"


@pytest.mark.parametrize("path, notebook, name, index", list(cases()))
def test_solution_passes_and_wrong_answer_gets_hint(path, notebook, name, index, capsys):
    module = load_solutions(path)
    key = f"{notebook}.{name}"
    assert hasattr(module, name), f"{path.name} has no solution for exercise {key}"
    if index == 0:
        context = module.example_context(name) if hasattr(module, "example_context") else {}
    else:
        context = MORE_CONTEXTS[key][index - 1]
    answer = getattr(module, name)(**context)
    assert checks.check(key, answer, **context) is True, (
        f"{path.name}: {name}(**{context!r:.200}) = {answer!r}"
    )
    assert "correct" in capsys.readouterr().out

    assert checks.check(key, "certainly not the answer", **context) is False
    out = capsys.readouterr().out
    assert "not quite" in out and "Hint:" in out


@pytest.mark.parametrize("image_size", sorted(LAYER4_SIDES))
def test_layer4_exercises_agree_with_resnet18(image_size):
    """The references of 02.layer4_cells, 04.hw_factor and 05.layer4_cells against the real network."""
    shape = models.layer_output_shapes(models.resnet18_xray(), (1, 1, image_size, image_size), ["layer4"])
    side = LAYER4_SIDES[image_size]
    assert shape["layer4"] == (1, 512, side, side)
    assert checks.get_exercise("05.layer4_cells").reference(image_size=image_size) == side
    assert checks.get_exercise("02.layer4_cells").reference(image_size=image_size) == side * side
    assert checks.get_exercise("04.hw_factor").reference(image_size=image_size) == side * side
    if image_size == 100:  # the classic slip: 100 // 32 = 3 is wrong, and the check says so
        assert checks.check("05.layer4_cells", 100 // 32, image_size=100) is False
        assert checks.check("02.layer4_cells", (100 // 32) ** 2, image_size=100) is False


def test_references_give_the_hand_computed_answers():
    """A few inputs worked out by hand, so that a reference wrong for every input is caught too."""
    reference = {key: checks.get_exercise(key).reference for key in MORE_CONTEXTS}
    assert reference["01.monochrome1_value"](stored=0, bits_stored=12) == pytest.approx(1.0)
    assert reference["01.monochrome1_value"](stored=3000, bits_stored=12) == pytest.approx(1 - 3000 / 4095)
    assert reference["01.nyquist"](original=1024, size=512) == 0.25
    assert reference["01.std_from_sums"](n=4, sum_x=2.0, sum_x2=1.0) == pytest.approx(0.0, abs=1e-12)
    assert reference["01.leaked_fraction"](**MORE_CONTEXTS["01.leaked_fraction"][0]) == 0.5
    assert reference["01.ap_risk_ratio"](**MORE_CONTEXTS["01.ap_risk_ratio"][0]) == pytest.approx(0.6 / 0.25)
    assert reference["02.fc_parameters"](n_classes=14) == 512 * 14 + 14
    assert reference["02.pos_weight"](n_positive=6012, n_total=26684) == pytest.approx(20672 / 6012)
    assert reference["02.weighted_loss"](logit=0.0, label=1, pos_weight=2.0) == pytest.approx(2 * np.log(2))
    assert reference["02.weighted_loss"](logit=0.0, label=0, pos_weight=2.0) == pytest.approx(np.log(2))
    assert reference["02.best_epoch"](**MORE_CONTEXTS["02.best_epoch"][0]) == 4
    assert reference["03.positives_needed"](sensitivity=0.9, half_width=0.05) == 139
    assert reference["03.brier_of_constant"](prevalence=0.5) == 0.25
    assert reference["04.cam_value"](features=_TOY, weights=(1.0, 1.0), row=1, col=1) == 4.0
    assert reference["04.logit_from_cam"](features=_TOY, weights=(1.0, 1.0), bias=-2.0) == 1.0
    assert reference["04.negative_region"](features=_TOY, weights=(2.0, -0.5)) == (2, 2)
    assert reference["04.negative_region"](features=_TOY, weights=(-1.0, 1.0)) == (0, 0)
    assert reference["04.upsample_values"](values=(0.0, 4.0), size=8) == [0, 0, 0.5, 1.5, 2.5, 3.5, 4, 4]
    assert reference["05.box_area_baseline"](**MORE_CONTEXTS["05.box_area_baseline"][0]) == pytest.approx(
        (50 / 200 + 125 / 200) / 2
    )
    assert reference["05.ap_pa_ratio"](**MORE_CONTEXTS["05.ap_pa_ratio"][0]) == pytest.approx(
        (2 / 3) / (1 / 3)
    )
    assert [reference["06.n_patches"](duration=d) for d in (0.01, 0.96, 0.975, 20.0)] == [0, 0, 1, 20]
    assert reference["06.heat_share"](**MORE_CONTEXTS["06.heat_share"][0]) == pytest.approx(10 / 64)


def test_unattempted_exercise_is_reported_not_raised(capsys):
    assert checks.check("00.store_bytes", None) is False
    assert "not attempted yet" in capsys.readouterr().out


def test_unknown_exercise_names_the_known_ones():
    with pytest.raises(KeyError, match="store_bytes"):
        checks.check("00.no_such_thing", 1)


def test_close_compares_numbers_strings_and_arrays():
    assert checks.close(1.0005, 1.0)
    assert not checks.close(1.1, 1.0)
    assert checks.close(" CPU", "cpu")
    assert checks.close([1, 2, 3], (1.0, 2.0, 3.0))
    assert not checks.close([1, 2], [1, 2, 3])
    assert not checks.close(1, True)
