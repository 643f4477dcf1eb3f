"""helpers.breath.audio: reading WAV files of every kind, rejecting bad ones, the paper's log-mel and patches."""

from __future__ import annotations

import librosa
import numpy as np
import pytest
import soundfile as sf

from helpers.breath import audio
from helpers.breath.audio import AudioError


def tone(freq: float, seconds: float, sr: int, amplitude: float = 0.5) -> np.ndarray:
    return (amplitude * np.sin(2 * np.pi * freq * np.arange(int(seconds * sr)) / sr)).astype(np.float32)


def dominant_frequency(y: np.ndarray, sr: int) -> float:
    spectrum = np.abs(np.fft.rfft(y * np.hanning(len(y))))
    return float(np.fft.rfftfreq(len(y), 1 / sr)[spectrum.argmax()])


# --- reading -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("subtype", "sr", "channels", "tolerance"),
    [
        ("PCM_16", 44100, 2, 1e-3),
        ("PCM_U8", 16000, 1, 2e-2),
        ("PCM_24", 16000, 1, 1e-5),
        ("PCM_32", 16000, 2, 1e-5),
        ("FLOAT", 16000, 1, 1e-6),
        ("PCM_16", 4000, 1, 1e-3),
    ],
)
def test_load_audio_reads_each_bit_depth_and_rate_as_mono_float32_at_16k(
    tmp_path, subtype, sr, channels, tolerance
):
    left = tone(440.0, 1.5, sr, amplitude=0.5)
    data = np.stack([left, np.zeros_like(left)], axis=1) if channels == 2 else left
    path = tmp_path / f"x_{subtype}_{sr}.wav"
    sf.write(path, data, sr, subtype=subtype)

    y = audio.load_audio(path)

    assert y.dtype == np.float32 and y.ndim == 1
    assert abs(len(y) - 1.5 * 16000) <= 2
    expected_peak = 0.5 / channels  # stereo channels are averaged: (0.5 sin + 0) / 2
    assert abs(np.abs(y[2000:-2000]).max() - expected_peak) < 0.01
    assert abs(dominant_frequency(y, 16000) - 440.0) < 1.0
    if sr == 16000:  # no resampling: exactly the decoded samples, averaged
        assert np.abs(y - left / channels).max() < tolerance


@pytest.mark.parametrize("sr", [16000, 44100, 8000])
def test_load_audio_clips_a_float_file_beyond_full_scale_and_says_how_much(tmp_path, sr):
    y = tone(300.0, 1.5, sr, amplitude=2.0)  # a float WAV that was never scaled: samples go to +-2
    path = tmp_path / f"loud_{sr}.wav"
    sf.write(path, y, sr, subtype="FLOAT")
    over = int(np.count_nonzero(np.abs(y) > 1.0))
    assert sf.read(path, dtype="float32")[0].max() > 1.9  # the file really holds +-2

    with pytest.warns(audio.ClippedAudioWarning) as record:
        loaded = audio.load_audio(path)

    assert loaded.dtype == np.float32 and loaded.min() >= -1.0 and loaded.max() <= 1.0
    assert np.isclose(loaded.max(), 1.0) and np.isclose(loaded.min(), -1.0)
    message = str(record[0].message)
    assert f"loud_{sr}.wav: {over} of {y.size} samples" in message and "clipped to [-1, 1]" in message
    assert record[0].filename == __file__  # points at the caller of load_audio


@pytest.mark.parametrize(("subtype", "sr"), [("PCM_16", 44100), ("FLOAT", 16000), ("PCM_16", 4000)])
def test_load_audio_of_a_full_scale_file_stays_in_range_without_a_warning(tmp_path, subtype, sr, recwarn):
    rng = np.random.default_rng(0)
    y = np.sign(tone(900.0, 1.5, sr)) * 0.999 + rng.uniform(-1e-3, 1e-3, int(1.5 * sr))  # a square wave
    path = tmp_path / f"full_{subtype}_{sr}.wav"
    sf.write(path, y.astype(np.float32), sr, subtype=subtype)
    loaded = audio.load_audio(path)
    assert loaded.min() >= -1.0 and loaded.max() <= 1.0
    assert not [w for w in recwarn if issubclass(w.category, audio.ClippedAudioWarning)]


def test_load_audio_resamples_with_soxr_hq_like_librosa(tmp_path):
    y44 = tone(1000.0, 1.2, 44100) + tone(300.0, 1.2, 44100, 0.2)
    sf.write(tmp_path / "a.wav", y44, 44100, subtype="FLOAT")
    y = audio.load_audio(tmp_path / "a.wav")
    reference = librosa.resample(y44, orig_sr=44100, target_sr=16000, res_type="soxr_hq")
    np.testing.assert_allclose(y, reference, atol=1e-6)


def test_audio_info_reads_the_header(tmp_path):
    sf.write(tmp_path / "s.wav", np.zeros((8820, 2), np.float32), 44100, subtype="PCM_24")
    info = audio.audio_info(tmp_path / "s.wav")
    assert info == {
        "samplerate": 44100,
        "channels": 2,
        "frames": 8820,
        "duration": pytest.approx(0.2),
        "subtype": "PCM_24",
        "format": "WAV",
        "truncated": False,
    }


def good_wav_bytes(tmp_path) -> bytes:
    sf.write(tmp_path / "good.wav", tone(440.0, 2.0, 16000), 16000, subtype="PCM_16")
    return (tmp_path / "good.wav").read_bytes()


@pytest.mark.parametrize(
    ("name", "make", "reason"),
    [
        ("empty.wav", lambda good: b"", "the file is empty (0 bytes)"),
        ("header.wav", lambda good: good[:20], "not a readable audio file (Error in WAV"),
        ("data.wav", lambda good: good[: len(good) // 2], "truncated: the header promises more audio data"),
        (
            "random.wav",
            lambda good: np.random.default_rng(0).bytes(4000),
            "not a readable audio file (Format not",
        ),
        (
            "text.wav",
            lambda good: b"start end crackles wheezes\n" * 50,
            "not a readable audio file (Format not",
        ),
    ],
)
def test_load_audio_rejects_broken_files_naming_file_and_reason(tmp_path, name, make, reason):
    path = tmp_path / name
    path.write_bytes(make(good_wav_bytes(tmp_path)))
    with pytest.raises(AudioError) as caught:
        audio.load_audio(path)
    assert str(caught.value).startswith(f"{path}: ")
    assert reason in str(caught.value)
    assert isinstance(caught.value, ValueError)


def test_load_audio_rejects_silent_short_nan_and_missing_files(tmp_path):
    sf.write(tmp_path / "zeros.wav", np.zeros(32000, np.float32), 16000, subtype="PCM_16")
    sf.write(tmp_path / "quiet.wav", np.full(32000, 5e-7, np.float32), 16000, subtype="FLOAT")
    sf.write(tmp_path / "short.wav", tone(440.0, 0.96, 16000), 16000, subtype="PCM_16")
    sf.write(
        tmp_path / "nan.wav", np.where(np.arange(32000) == 7, np.nan, 0.1).astype(np.float32), 16000, "FLOAT"
    )
    cases = {
        "zeros.wav": "silent: peak amplitude 0 is below 1e-06",
        "quiet.wav": "silent: peak amplitude 5e-07 is below 1e-06",
        "short.wav": "too short: 0.960 s of audio, at least 0.975 s is needed (one 96-frame patch)",
        "nan.wav": "the samples contain NaN or infinite values",
        "missing.wav": "no such file",
    }
    for name, reason in cases.items():
        with pytest.raises(AudioError) as caught:
            audio.load_audio(tmp_path / name)
        assert str(caught.value) == f"{tmp_path / name}: {reason}"
    # the minimum is a parameter: 0.96 s is enough when the caller says so
    assert len(audio.load_audio(tmp_path / "short.wav", min_duration=0.5)) == 15360


# --- log-mel -------------------------------------------------------------------------------------------


def librosa_log_mel(y: np.ndarray) -> np.ndarray:
    """The same features straight from librosa; the 56-sample pads undo librosa's window centring."""
    spec = np.abs(
        librosa.stft(np.pad(y, 56), n_fft=512, hop_length=160, win_length=400, window="hann", center=False)
    )
    bank = librosa.filters.mel(sr=16000, n_fft=512, n_mels=64, fmin=100.0, fmax=2000.0, htk=True, norm=None)
    return np.log(bank @ spec + 0.01).T


def test_log_mel_matches_librosa_stft_and_filter_bank():
    y = np.random.default_rng(1).standard_normal(16000 * 3).astype(np.float32) * 0.1
    features = audio.log_mel(y)
    assert features.dtype == np.float32 and features.shape == (1 + (len(y) - 400) // 160, 64)
    np.testing.assert_allclose(features, librosa_log_mel(y), atol=1e-4)


def test_log_mel_of_a_1000_hz_tone_peaks_in_the_band_centred_nearest_1000_hz():
    features = audio.log_mel(tone(1000.0, 2.0, 16000))
    centres = audio.mel_center_frequencies()
    assert features.mean(axis=0).argmax() == np.abs(centres - 1000.0).argmin()


@pytest.mark.parametrize(("n", "frames"), [(399, 0), (400, 1), (559, 1), (560, 2), (16000, 98), (15600, 96)])
def test_log_mel_framing_has_no_centre_padding(n, frames):
    y = np.random.default_rng(0).standard_normal(n).astype(np.float32)
    assert audio.log_mel(y).shape == (frames, 64)


def test_frame_j_holds_samples_160j_to_160j_plus_400():
    y = np.zeros(3000, np.float32)
    y[1000] = 1.0  # inside frames 4 (640-1040), 5 (800-1200) and 6 (960-1360) only
    energy = audio.log_mel(y).max(axis=1)
    silent = np.log(0.01)
    assert np.flatnonzero(energy > silent + 1e-6).tolist() == [4, 5, 6]
    assert energy[5] > energy[4] and energy[4] == pytest.approx(
        energy[6], abs=1e-5
    )  # Hann peak in the middle


def test_log_mel_uses_stft_magnitude_not_power():
    y = np.random.default_rng(2).standard_normal(8000).astype(np.float32) * 0.1
    mel1 = np.exp(audio.log_mel(y).astype(np.float64)) - 0.01
    mel2 = np.exp(audio.log_mel(2 * y).astype(np.float64)) - 0.01
    np.testing.assert_allclose(
        mel2, 2 * mel1, rtol=1e-4, atol=1e-5
    )  # magnitude doubles; power would quadruple


def test_log_mel_rejects_bad_input():
    with pytest.raises(ValueError, match=r"mono signal of shape \(n,\), got shape \(2, 100\)"):
        audio.log_mel(np.zeros((2, 100), np.float32))
    with pytest.raises(
        ValueError, match="need 0 <= fmin < fmax <= sr / 2, got fmin=100.0, fmax=2000.0, sr=3000"
    ):
        audio.log_mel(np.zeros(1000, np.float32), 3000)  # 2000 Hz lies above the Nyquist frequency of 3 kHz
    with pytest.raises(ValueError, match="n_fft=256 is shorter than the 400-sample window"):
        audio.log_mel(np.zeros(1000, np.float32), n_fft=256)


def test_mel_bands_follow_the_htk_scale_between_fmin_and_fmax():
    centres = audio.mel_center_frequencies()
    assert centres.shape == (64,)
    mels = 1127.0 * np.log1p(np.concatenate([[100.0], centres, [2000.0]]) / 700.0)
    np.testing.assert_allclose(np.diff(mels), np.diff(mels)[0], rtol=1e-9)  # evenly spaced in HTK mel
    bank = audio.mel_filter_bank()
    assert bank.shape == (64, 257) and not bank.flags.writeable
    assert bank.max() <= 1.0 and (bank > 0).sum(axis=1).min() == 1 and (bank > 0).sum(axis=1).max() == 3
    # 64 bands over 1900 Hz are narrower than the 31.25 Hz FFT bins at the bottom: bands 0 and 1 both read
    # only bin 4 (125 Hz), with triangle weights that add up to 1
    assert np.flatnonzero(bank[0]).tolist() == np.flatnonzero(bank[1]).tolist() == [4]
    assert bank[0, 4] + bank[1, 4] == pytest.approx(1.0)


def test_crop_bands_removes_bands_centred_above_max_hz():
    features = np.arange(10 * 64, dtype=np.float32).reshape(10, 64)
    cropped, kept = audio.crop_bands(features, 1500.0)
    centres = audio.mel_center_frequencies()
    assert kept == 54 and cropped.shape == (10, 54)
    assert centres[kept - 1] <= 1500.0 < centres[kept]
    np.testing.assert_array_equal(cropped, features[:, :54])
    batch, kept3 = audio.crop_bands(np.zeros((5, 96, 64), np.float32), 1500.0)
    assert batch.shape == (5, 96, 54) and kept3 == 54
    with pytest.raises(ValueError, match="below the lowest band centre"):
        audio.crop_bands(features, 100.0)
    # why crop instead of recomputing with fmax=1500: 64 bands over 100-1500 Hz leave some bands empty
    with pytest.warns(UserWarning, match="Empty filters"):
        audio.mel_filter_bank.__wrapped__(16000, 512, 64, 100.0, 1500.0)


# --- patches -------------------------------------------------------------------------------------------


def test_patches_are_non_overlapping_and_drop_the_partial_last_one():
    features = np.arange(250 * 64, dtype=np.float32).reshape(250, 64)
    cut = audio.patches(features)
    assert cut.shape == (2, 96, 64) and cut.flags.c_contiguous
    np.testing.assert_array_equal(cut[1], features[96:192])  # frames 192-249 (a partial patch) are dropped
    np.testing.assert_allclose(audio.patch_start_times(len(cut)), [0.0, 0.96])
    overlapping = audio.patches(features, hop=48)
    assert overlapping.shape == (4, 96, 64)
    np.testing.assert_array_equal(overlapping[3], features[144:240])
    np.testing.assert_allclose(audio.patch_start_times(4, hop=48), [0.0, 0.48, 0.96, 1.44])
    assert audio.patches(features[:95]).shape == (0, 96, 64)


def test_a_patch_span_of_samples_gives_exactly_one_patch():
    n = int(round(audio.PATCH_SPAN_SECONDS * 16000))
    assert n == 15600
    y = np.random.default_rng(3).standard_normal(n).astype(np.float32)
    assert audio.patches(audio.log_mel(y)).shape == (1, 96, 64)
    assert audio.patches(audio.log_mel(y[:-1])).shape == (0, 96, 64)


def test_stft_magnitude_is_the_first_step_of_log_mel():
    y = tone(1000.0, 1.0, 16000)
    magnitude = audio.stft_magnitude(y)
    assert magnitude.dtype == np.float32 and magnitude.shape == (1 + (16000 - 400) // 160, 257)
    assert magnitude.mean(axis=0).argmax() == 32  # 1000 Hz / 31.25 Hz per bin
    expected = np.log(magnitude @ audio.mel_filter_bank().T + 0.01)
    np.testing.assert_allclose(audio.log_mel(y), expected, atol=1e-5)
    assert audio.stft_magnitude(y[:399]).shape == (0, 257)
    with pytest.raises(ValueError, match=r"mono signal of shape \(n,\)"):
        audio.stft_magnitude(np.zeros((2, 500), np.float32))


def test_power_share_above_separates_a_4_khz_recording_from_a_wide_band_one():
    noise = np.random.default_rng(0).standard_normal(44100 * 2).astype(np.float32) * 0.1
    wide = audio.resample(noise, 44100, 16000)
    narrow = audio.resample(audio.resample(noise, 44100, 4000), 4000, 16000)
    assert audio.power_share_above(wide, 2100.0) == pytest.approx(5900 / 8000, abs=0.02)  # white up to 8 kHz
    assert audio.power_share_above(narrow, 2100.0) < 1e-4
    assert audio.power_share_above(tone(1000.0, 1.0, 16000), 1100.0) < 1e-3
    assert np.isnan(audio.power_share_above(np.zeros(100), 1000.0))
