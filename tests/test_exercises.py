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
import torch

from helpers.breath import audio
from helpers.exercises import checks
from helpers.explain.faithfulness import FaithfulnessResult
from helpers.training import models

ROOT = Path(__file__).resolve().parents[1]
SOLUTION_FILES = sorted((ROOT / "solutions").glob("[0-9][0-9]*_*.py"))
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
_LABELS = np.array([3, 3, 3, 0, 1, 3, 2, 3, 0, 1, 1, 0, 1, 1, 2, 3])

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
    "02.epoch_by_accuracy": [
        {"history": pd.DataFrame({"epoch": [1, 2, 3, 4, 5], "val_acc": [0.5, 0.75, 0.625, 0.75, 0.7]})},
        {"history": pd.DataFrame({"epoch": [1, 2, 3], "val_acc": [0.9, 0.8, 0.7]})},  # the first epoch
    ],
    "03.ppv_at_prevalence": [
        {"sensitivity": 0.9, "specificity": 0.8, "prevalence": 4664 / 12173},  # the AP films
        {"sensitivity": 0.5, "specificity": 0.99, "prevalence": 0.01},
    ],
    "03.youden_threshold": [
        {"y": _Y, "prob": _PROB},
        {"y": np.array([0, 1, 0, 1, 1, 0]), "prob": np.array([0.2, 0.3, 0.4, 0.6, 0.9, 0.7])},
    ],
    "03.threshold_for_sensitivity": [
        {"y": _Y, "prob": _PROB},
        {"y": np.array([0, 1, 1, 0, 1]), "prob": np.array([0.9, 0.9, 0.2, 0.1, 0.6], dtype=np.float32)},
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
    "05.deletion_wins": [
        {"result": FaithfulnessResult(_FRACTIONS, _CURVES, _RANDOM[:, ::-1], _RANDOM, _CURVES[:, ::-1])},
        {"result": FaithfulnessResult(_FRACTIONS, _RANDOM, _CURVES[:, ::-1], _CURVES, _RANDOM[:, ::-1])},
    ],
    "06.n_patches": [{"duration": d} for d in (0.01, 0.96, 0.975, 5.5, 30.0)],
    "06.icbhi_score": [
        {"y_true": np.array([0, 1, 2, 3, 0, 0]), "y_pred": np.array([0, 1, 2, 3, 0, 0])},
        {"y_true": np.array([0, 0, 1, 2, 3]), "y_pred": np.array([1, 1, 3, 2, 0])},
    ],
    "06.heat_share": [
        {"profile": np.ones(64), "centres": audio.mel_center_frequencies(), "hz": 1500.0},  # flat: 10 / 64
        {
            "profile": np.linspace(0.0, 1.0, 48),
            "centres": audio.mel_center_frequencies(48, 50.0, 4000.0),
            "hz": 1000.0,
        },
    ],
    "06.device_rule": [
        {"level": _LEVEL, "threshold": -2.5, "labels": _LABELS},
        {"level": _LEVEL, "threshold": -5.0, "labels": _LABELS},  # every patch on one side of the rule
        {"level": _LEVEL, "threshold": -1.5, "labels": np.arange(16) % 4},
    ],
    "07.always_pneumonia": [
        {"n_normal": 1341, "n_pneumonia": 3875},  # the real training folder
        {"n_normal": 30, "n_pneumonia": 10},  # normal the majority: calling everyone ill is mostly wrong
    ],
}


def load_solutions(path: Path):
    spec = importlib.util.spec_from_file_location(f"solutions_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def exercise_keys() -> list[tuple[Path, str, str]]:
    return [
        (path, path.name.split("_")[0], name)
        for path in SOLUTION_FILES
        for name in checks._exercises(path.name.split("_")[0])
    ]


def cases():
    for path, notebook, name in exercise_keys():
        # input 0: the solution file's example_context; 1, 2, ...: MORE_CONTEXTS
        for index in range(1 + len(MORE_CONTEXTS.get(f"{notebook}.{name}", []))):
            yield pytest.param(path, notebook, name, index, id=f"{notebook}.{name}-{index}")


def test_every_notebook_with_exercises_has_a_solutions_file():
    registered = {p.stem[2:] for p in (ROOT / "helpers" / "exercises").glob("ex[0-9][0-9]*.py")}
    with_solutions = {p.name.split("_")[0] for p in SOLUTION_FILES}
    assert registered <= with_solutions, f"exercises without solutions: {sorted(registered - with_solutions)}"


def test_every_exercise_that_takes_an_input_is_tried_on_several():
    keys = set()
    for _, notebook, name in exercise_keys():
        key = f"{notebook}.{name}"
        keys.add(key)
        exercise = checks.get_exercise(key)
        if (
            exercise.inputs is not None
        ):  # the learner writes a function: the check itself tries several inputs
            parameters = set(inspect.signature(exercise.inputs).parameters)
            for context in [{}, *MORE_CONTEXTS.get(key, [])] if not parameters else MORE_CONTEXTS[key]:
                assert len(exercise.inputs(**context)) >= 2, f"{key} calls the learner's function only once"
        else:
            parameters = set(inspect.signature(exercise.reference).parameters)
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
    if checks.get_exercise(key).inputs is not None:  # a code exercise: the worked solution is the answer
        answer = getattr(module, name)
    else:
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
    assert (
        reference["02.epoch_by_accuracy"](**MORE_CONTEXTS["02.epoch_by_accuracy"][0]) == 2
    )  # a tie: the first
    import torch

    weighted_bce = checks.get_exercise("02.weighted_bce").reference
    zeros, labels = torch.zeros(4), torch.tensor([1.0, 0.0, 0.0, 1.0])
    assert weighted_bce(logits=zeros, labels=labels, pos_weight=3.0) == pytest.approx(
        (3 + 1 + 1 + 3) / 4 * np.log(2)
    )
    assert weighted_bce(logits=torch.tensor([-200.0]), labels=torch.ones(1), pos_weight=2.0) == pytest.approx(
        400
    )
    linear_window = checks.get_exercise("01.linear_window").reference  # the course's read_xray on a window
    window = linear_window(values=np.array([[0, 99, 100, 101, 200]]), center=100, width=101)
    assert window.shape == (1, 5)
    assert window[0] == pytest.approx(
        [0, 0.495, 0.505, 0.515, 1], abs=1e-6
    )  # (v - 99.5) / 100 + 0.5, clipped
    # 03: the positives score 0.8 0.55 0.9 0.35 0.7: a 0.8 target needs 4 of 5 found -> 0.55
    assert checks.get_exercise("03.threshold_for_sensitivity").reference(y=_Y, prob=_PROB, target=0.8) == 0.55
    assert checks.get_exercise("03.threshold_for_sensitivity").reference(y=_Y, prob=_PROB, target=1.0) == 0.35
    assert reference["03.positives_needed"](sensitivity=0.9, half_width=0.05) == 139
    assert reference["03.brier_of_constant"](prevalence=0.5) == 0.25
    assert reference["04.cam_value"](features=_TOY, weights=(1.0, 1.0), row=1, col=1) == 4.0
    assert reference["04.logit_from_cam"](features=_TOY, weights=(1.0, 1.0), bias=-2.0) == 1.0
    assert reference["04.negative_region"](features=_TOY, weights=(2.0, -0.5)) == (2, 2)
    assert reference["04.negative_region"](features=_TOY, weights=(-1.0, 1.0)) == (0, 0)
    assert reference["04.upsample_values"](values=(0.0, 4.0), size=8) == [0, 0, 0.5, 1.5, 2.5, 3.5, 4, 4]
    # _CURVES against _RANDOM (trapezoids over 4 points): 0.32 < 0.58, 0.45 < 0.52, 0.25 < 0.45 -> 3 wins
    assert reference["05.deletion_wins"](**MORE_CONTEXTS["05.deletion_wins"][0]) == 3
    assert reference["05.deletion_wins"](**MORE_CONTEXTS["05.deletion_wins"][1]) == 0
    assert [reference["06.n_patches"](duration=d) for d in (0.01, 0.96, 0.975, 20.0)] == [0, 0, 1, 20]
    assert reference["06.heat_share"](**MORE_CONTEXTS["06.heat_share"][0]) == pytest.approx(10 / 64)
    # below -2.5: patches 0-5, 8, 9 with labels 3 3 3 0 1 3 0 1 (four 3s); the rest 2 3 1 0 1 1 2 3 (three 1s)
    assert reference["06.device_rule"](**MORE_CONTEXTS["06.device_rule"][0]) == 7 / 16
    assert reference["06.device_rule"](**MORE_CONTEXTS["06.device_rule"][1]) == 6 / 16  # one side: six 3s
    shape = checks.get_exercise("06.spectrogram_shape").reference  # librosa: 1 + n // hop frames centred
    clip = {"n_samples": 16000, "sample_rate": 16000, "n_fft": 512, "hop_length": 160, "n_mels": 64}
    assert shape(**clip, center=True) == (64, 101) and shape(**clip, center=False) == (64, 97)
    assert shape(**clip | {"sample_rate": 44100}, center=False) == (64, 97)  # the rate changes no count
    # 07: 96.78 % needs 301 of 311 images (300/310 = 96.774 rounds to 96.77); 15/16 = 93.75 % exactly
    smallest_set = checks.get_exercise("07.smallest_set").reference
    answers = [smallest_set(percent=p, decimals=d) for p, d in ((96.78, 2), (88.48, 2), (93.75, 2))]
    assert answers == [311, 165, 16]
    assert reference["07.always_pneumonia"](n_normal=234, n_pneumonia=390) == 0.625


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


def _fake_exercise(monkeypatch, expected) -> None:
    """Make every key name one exercise whose reference answer is ``expected``."""
    exercise = checks.Exercise("q?", lambda: expected, "a hint")
    monkeypatch.setattr(checks, "get_exercise", lambda key: exercise)


@pytest.mark.parametrize(
    "answer, expected",
    [
        (10**400, 1.0),
        (-(10**400), 0.5),
        (10**400, 3),
        ([10**400], [1.0, 2.0]),
        (1.0, 10**400),
        ([10**400], 2.0),
    ],
    ids=[
        "int-vs-float",
        "negative-int-vs-float",
        "int-vs-int",
        "list-vs-list",
        "float-vs-int",
        "list-vs-float",
    ],
)
def test_check_does_not_raise_for_huge_integers(monkeypatch, capsys, answer, expected):
    _fake_exercise(monkeypatch, expected)
    assert checks.check("99.huge", answer) is False
    assert "not quite" in capsys.readouterr().out


def test_huge_integers_are_compared_exactly():
    assert checks.close(10**400, 10**400)
    assert checks.close(10**400 + 10**396, 10**400)  # within the relative tolerance
    assert not checks.close(10**400 + 10**398, 10**400)
    assert not checks.close(10**400, float("inf"))
    assert not checks.close(float("inf"), 10**400)


@pytest.mark.parametrize("answer", [float("nan"), np.nan, np.float32("nan"), np.array([np.nan])])
def test_nan_is_right_when_nan_is_expected(monkeypatch, capsys, answer):
    _fake_exercise(monkeypatch, float("nan"))
    assert checks.check("99.nan", answer) is True
    assert "correct" in capsys.readouterr().out


@pytest.mark.parametrize("answer, expected", [(1.0, float("nan")), (float("nan"), 1.0), (float("nan"), 0)])
def test_nan_against_a_number_is_wrong(answer, expected):
    assert not checks.close(answer, expected)


def test_a_size_one_array_tensor_or_list_counts_as_a_number():
    for answer in (
        np.array([0.25]),
        np.array([[0.25]]),
        [0.25],
        (0.25,),
        torch.tensor([0.25]),
        torch.tensor(0.25, requires_grad=True),
        torch.tensor([[0.25]], requires_grad=True),
    ):
        assert checks.close(answer, 0.25), answer
        assert not checks.close(answer, 0.5), answer
    assert checks.close(np.array([7]), 7)
    assert checks.close(np.array([True]), True)
    assert not checks.close(np.array([0.25, 0.25]), 0.25)  # two numbers are not one


@pytest.mark.parametrize(
    "answer",
    [
        "text",
        {"a": 1},
        object(),
        [[1, 2], [3]],
        [],
        1 + 2j,
        b"bytes",
        lambda: 1,
        torch.ones(2, requires_grad=True),
    ],
    ids=lambda answer: type(answer).__name__,
)
@pytest.mark.parametrize(
    "expected", [0.5, 3, True, [1.0, 2.0], "cpu", np.zeros((2, 2))], ids=lambda e: type(e).__name__
)
def test_check_never_raises_for_wrong_types(monkeypatch, capsys, answer, expected):
    _fake_exercise(monkeypatch, expected)
    assert checks.check("99.types", answer) is False
    out = capsys.readouterr().out
    assert "not quite" in out and "Hint: a hint" in out


def test_a_compare_that_fails_on_an_answer_gives_the_hint(monkeypatch, capsys):
    exercise = checks.Exercise("q?", lambda: [1, 2], "a hint", compare=lambda a, e: a[5] == e[0])
    monkeypatch.setattr(checks, "get_exercise", lambda key: exercise)
    assert checks.check("99.index", [1]) is False
    assert "Hint: a hint" in capsys.readouterr().out


def code_exercise_keys() -> list[str]:
    return [
        f"{notebook}.{name}"
        for _, notebook, name in exercise_keys()
        if checks.get_exercise(f"{notebook}.{name}").inputs is not None
    ]


def _broken_functions(key: str, context: dict):
    """A function that raises, one that returns None, and one that is right on the first input only."""
    exercise = checks.get_exercise(key)
    calls = exercise.inputs(**context)
    first = exercise.reference(**calls[0])

    def raises(**kwargs):
        raise IndexError("boom")

    def unanswered(**kwargs):
        return None

    def first_only(**kwargs):
        return first

    return calls, raises, unanswered, first_only


@pytest.mark.parametrize("key", code_exercise_keys())
def test_a_code_exercise_reports_broken_functions_without_raising(key, capsys):
    context = MORE_CONTEXTS[key][0] if key in MORE_CONTEXTS else {}
    calls, raises, unanswered, first_only = _broken_functions(key, context)
    assert len(calls) >= 2

    assert checks.check(key, lambda **kwargs: raises(**kwargs), **context) is False
    out = capsys.readouterr().out
    assert "raised IndexError: boom" in out and "input 1 of" in out and "Hint:" in out

    assert checks.check(key, lambda **kwargs: unanswered(**kwargs), **context) is False
    assert "not attempted yet" in capsys.readouterr().out

    assert checks.check(key, lambda **kwargs: first_only(**kwargs), **context) is False
    out = capsys.readouterr().out
    assert "not quite on input 2 of" in out and "Hint:" in out

    assert checks.check(key, 0.5, **context) is False
    assert "expected a function" in capsys.readouterr().out


def test_a_code_exercise_cannot_change_the_inputs_it_is_checked_on(capsys):
    def vandal(forward_input, grad_output):  # right answer, computed after scribbling over the inputs
        answer = (forward_input > 0) * grad_output.clamp(min=0)
        forward_input.fill_(1.0)
        grad_output.fill_(1.0)
        return answer

    assert checks.check("05.guided_relu_backward", vandal) is True
    assert checks.check("05.guided_relu_backward", vandal) is True  # the inputs were copies
    assert "correct on all" in capsys.readouterr().out


@pytest.mark.parametrize(
    "key, wrong",
    [
        (
            "04.grad_cam_raw",
            lambda activations, gradients: (gradients.mean((2, 3), keepdim=True) * activations).sum(1),
        ),
        (
            "04.grad_cam_raw",
            lambda activations, gradients: (gradients.sum((2, 3), keepdim=True) * activations).sum(1).relu(),
        ),
        ("05.guided_relu_backward", lambda forward_input, grad_output: (forward_input > 0) * grad_output),
        ("05.guided_relu_backward", lambda forward_input, grad_output: grad_output.clamp(min=0)),
        (
            "05.pointing_game",
            lambda heatmap, boxes: float(
                any(
                    x <= r + 0.5 < x + w and y <= c + 0.5 < y + h
                    for x, y, w, h in boxes
                    for r, c in [np.unravel_index(np.argmax(heatmap), heatmap.shape)]
                )
            ),
        ),
    ],
    ids=["no ReLU", "sum not mean", "plain gradient", "deconvnet", "rows and columns swapped"],
)
def test_the_classic_slips_in_code_exercises_are_caught(key, wrong, capsys):
    assert checks.check(key, wrong) is False
    assert "not quite on input" in capsys.readouterr().out
