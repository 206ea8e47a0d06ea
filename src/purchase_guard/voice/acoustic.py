"""Age-related acoustic measures of a voice: pitch, formants and spectral shape (numpy only).

A speaker embedding is trained to tell people apart, not to tell children from adults, and
it also carries the recording channel. The child detector therefore gets measures that
follow from the size of the speaker's larynx and vocal tract: fundamental frequency (F0),
the first three formants (shorter vocal tracts have higher formants) and the spectral
centroid and tilt of voiced speech.

Everything is measured on the signal low-passed and decimated to 8 kHz, so a narrow-band
device (telephony, FSDD's 8 kHz recordings) and a wide-band microphone give the same
measures, and nothing above 4 kHz (where microphones differ most) can carry the channel.
Levels are normalised per frame, so loudness does not enter either.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.signal import resample_poly

FloatArray = np.ndarray[Any, np.dtype[np.float64]]

RATE = 8000
FRAME = 320  # 40 ms: two periods of a 60 Hz voice
HOP = 80  # 10 ms
F0_MIN, F0_MAX = 60.0, 520.0
VOICING = 0.45  # normalised autocorrelation peak above which a frame is voiced
LPC_ORDER = 10  # 8 kHz: two poles per kHz plus two for the glottal/radiation slope
FEATURE_NAMES: tuple[str, ...] = (
    "log_f0_median",
    "log_f0_p10",
    "log_f0_p90",
    "voiced_fraction",
    "log_f1",
    "log_f2",
    "log_f3",
    "log_formant_spacing",
    "log_centroid",
    "tilt_db_per_octave",
)
N_FEATURES = len(FEATURE_NAMES)


def _frames(x: FloatArray) -> FloatArray:
    if x.shape[0] < FRAME:
        x = np.pad(x, (0, FRAME - x.shape[0]))
    n = 1 + (x.shape[0] - FRAME) // HOP
    return np.asarray(np.lib.stride_tricks.sliding_window_view(x, FRAME)[::HOP][:n], dtype=np.float64)


def _levinson(r: FloatArray, order: int) -> FloatArray:
    """LPC polynomials (rows: 1, a1..ap) from autocorrelations, vectorised over frames."""
    n = r.shape[0]
    a = np.zeros((n, order + 1))
    a[:, 0] = 1.0
    err = r[:, 0].copy()
    for i in range(1, order + 1):
        acc = r[:, i] + np.einsum("fj,fj->f", a[:, 1:i], r[:, i - 1 : 0 : -1])
        k = -acc / np.maximum(err, 1e-12)
        prev = a.copy()
        a[:, i] = k
        a[:, 1:i] = prev[:, 1:i] + k[:, None] * prev[:, i - 1 : 0 : -1]
        err = err * (1.0 - k * k)
    return a


def _formants(voiced: FloatArray) -> FloatArray:
    """(frames, 3) first three formant frequencies in Hz (nan where not found)."""
    pre = np.concatenate([voiced[:, :1], voiced[:, 1:] - 0.63 * voiced[:, :-1]], axis=1)
    w = pre * np.hamming(FRAME)[None, :]
    spec = np.fft.rfft(w, n=2 * FRAME, axis=1)
    r = np.fft.irfft(np.abs(spec) ** 2, axis=1)[:, : LPC_ORDER + 1]
    r[:, 0] *= 1.0 + 1e-6  # white-noise correction keeps the recursion stable
    a = _levinson(r, LPC_ORDER)
    # Roots of each polynomial as eigenvalues of its companion matrix, all frames at once.
    comp = np.zeros((a.shape[0], LPC_ORDER, LPC_ORDER))
    comp[:, 0, :] = -a[:, 1:]
    comp[:, np.arange(1, LPC_ORDER), np.arange(LPC_ORDER - 1)] = 1.0
    roots = np.linalg.eigvals(comp)
    freq = np.angle(roots) * RATE / (2 * np.pi)
    bw = -np.log(np.maximum(np.abs(roots), 1e-9)) * RATE / np.pi
    ok = (freq > 200.0) & (freq < 3700.0) & (bw < 500.0) & (np.imag(roots) > 0)
    cand = np.where(ok, freq, np.inf)
    cand.sort(axis=1)
    out = cand[:, :3]
    out[~np.isfinite(out)] = np.nan
    return np.asarray(out, dtype=np.float64)


def features(samples_16k: np.ndarray[Any, Any]) -> FloatArray:
    """The FEATURE_NAMES measures of one (silence-trimmed) utterance; nan where unmeasurable."""
    x = resample_poly(np.asarray(samples_16k, dtype=np.float64), 1, 2)
    frames = _frames(x)
    frames = frames - frames.mean(axis=1, keepdims=True)
    energy = np.sqrt(np.mean(frames * frames, axis=1))
    loud = energy > max(1e-5, 0.1 * float(np.percentile(energy, 90)))
    out = np.full(N_FEATURES, np.nan)
    if not loud.any():
        return out
    win = frames * np.hanning(FRAME)[None, :]
    spec = np.fft.rfft(win, n=2 * FRAME, axis=1)
    ac = np.fft.irfft(np.abs(spec) ** 2, axis=1)[:, :FRAME]
    ac = ac / np.maximum(ac[:, :1], 1e-12)
    # Correct for the window's own autocorrelation so long lags are not penalised.
    wac = np.fft.irfft(np.abs(np.fft.rfft(np.hanning(FRAME), n=2 * FRAME)) ** 2)[:FRAME]
    ac = ac / np.maximum(wac / wac[0], 1e-3)[None, :]
    lo, hi = int(RATE / F0_MAX), int(RATE / F0_MIN)
    lag = lo + np.argmax(ac[:, lo : hi + 1], axis=1)
    peak = ac[np.arange(ac.shape[0]), lag]
    voiced = loud & (peak > VOICING)
    out[3] = float(voiced.sum() / loud.sum())
    if voiced.sum() < 5:
        return out
    # Parabolic interpolation of the peak for sub-sample lag.
    idx = np.arange(ac.shape[0])[voiced]
    lv = lag[voiced]
    y0, y1, y2 = ac[idx, lv - 1], ac[idx, lv], ac[idx, np.minimum(lv + 1, FRAME - 1)]
    denom = y0 - 2 * y1 + y2
    shift = np.where(np.abs(denom) > 1e-9, 0.5 * (y0 - y2) / np.where(denom == 0, 1, denom), 0.0)
    f0 = RATE / (lv + np.clip(shift, -0.5, 0.5))
    lf0 = np.log(f0)
    out[0], out[1], out[2] = np.median(lf0), np.percentile(lf0, 10), np.percentile(lf0, 90)
    fm = _formants(frames[voiced])
    with np.errstate(invalid="ignore"):
        med = np.nanmedian(fm, axis=0) if np.isfinite(fm).any() else np.full(3, np.nan)
    out[4:7] = np.log(med)
    if np.all(np.isfinite(med)):
        # A uniform tube of length L has formants at (2k-1)c/4L: the mean spacing estimates 1/L.
        out[7] = float(np.log(np.mean(med / np.array([0.5, 1.5, 2.5]))))
    power = np.abs(spec[voiced]) ** 2
    freqs = np.fft.rfftfreq(2 * FRAME, 1.0 / RATE)
    band = (freqs >= 100.0) & (freqs <= 3800.0)
    p = power[:, band] / np.maximum(power[:, band].sum(axis=1, keepdims=True), 1e-20)
    ltas = p.mean(axis=0)
    out[8] = float(np.log((ltas * freqs[band]).sum() / ltas.sum()))
    slope = np.polyfit(np.log2(freqs[band]), 10 * np.log10(ltas + 1e-12), 1)[0]
    out[9] = float(slope)
    return out
