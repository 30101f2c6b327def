"""Signal processing: DFT, STFT, window functions, MelWeightMatrix."""
from __future__ import annotations

import numpy as np

from ..registry import kernel


def _np_dtype(onnx_type: int):
    from onnx.helper import tensor_dtype_to_np_dtype

    try:
        return np.dtype(tensor_dtype_to_np_dtype(int(onnx_type)))
    except Exception:
        raise ValueError(f"unsupported output_datatype {onnx_type}") from None


def _scalar_int(v, what):
    a = np.asarray(v)
    if a.size != 1:
        raise ValueError(f"{what} must be a scalar, got shape {a.shape}")
    return int(a.reshape(-1)[0])


# ---- DFT -------------------------------------------------------------------------------------

def _dft(x, dft_length, axis, inverse, onesided):
    x = np.asarray(x)
    r = x.ndim
    if r < 2 or x.shape[-1] not in (1, 2):
        raise ValueError(f"DFT input must end in a dimension of 1 (real) or 2 (complex), got shape {x.shape}")
    if not (-r <= axis <= -2 or 0 <= axis <= r - 2):
        raise ValueError(f"DFT axis {axis} out of range [{-r}, -2] U [0, {r - 2}] for rank {r}")
    ax = axis + r if axis < 0 else axis
    dt = x.dtype
    cdt = np.complex128 if dt == np.float64 else np.complex64
    if x.shape[-1] == 2:
        c = x[..., 0].astype(cdt) + 1j * x[..., 1].astype(cdt)
        is_real = False
    else:
        c = x[..., 0].astype(cdt)
        is_real = True
    n = None if dft_length is None else _scalar_int(dft_length, "dft_length")
    if n is not None and n <= 0:
        raise ValueError(f"dft_length must be positive, got {n}")
    if onesided and inverse:
        # IRFFT: a one-sided spectrum (a real input counts as zero imaginary part) -> a real signal
        m = c.shape[ax]
        nn = n if n is not None else 2 * (m - 1)
        if nn <= 0:
            raise ValueError("IRFFT output length must be positive")
        y = np.fft.irfft(c, n=nn, axis=ax)
        return np.asarray(y[..., None], dtype=dt)
    if inverse:
        y = np.fft.ifft(c, n=n, axis=ax)
    else:
        y = np.fft.fft(c, n=n, axis=ax)
    if onesided:
        if not is_real:
            raise ValueError("DFT onesided=1 (forward) requires a real input (last dimension 1)")
        length = y.shape[ax]
        y = np.take(y, np.arange(length // 2 + 1), axis=ax)
    out = np.stack([y.real, y.imag], axis=-1)
    return np.asarray(out, dtype=dt)


@kernel("DFT", since=17)
def dft17(input, dft_length=None, *, axis=1, inverse=0, onesided=0):
    return _dft(input, dft_length, int(axis), inverse, onesided)


@kernel("DFT", since=20)
def dft(input, dft_length=None, axis=None, *, inverse=0, onesided=0):
    ax = -2 if axis is None else _scalar_int(axis, "axis")
    return _dft(input, dft_length, ax, inverse, onesided)


# ---- STFT ------------------------------------------------------------------------------------

@kernel("STFT", since=17)
def stft(signal, frame_step, window=None, frame_length=None, *, onesided=1):
    x = np.asarray(signal)
    if x.ndim != 3 or x.shape[-1] not in (1, 2):
        raise ValueError(f"STFT signal must have shape [batch, length, 1 or 2], got {x.shape}")
    dt = x.dtype
    cdt = np.complex128 if dt == np.float64 else np.complex64
    step = _scalar_int(frame_step, "frame_step")
    if step <= 0:
        raise ValueError(f"frame_step must be positive, got {step}")
    sig_len = x.shape[1]
    w = None if window is None else np.asarray(window)
    if w is not None and w.ndim != 1:
        raise ValueError(f"window must be 1-D, got shape {w.shape}")
    if frame_length is not None:
        L = _scalar_int(frame_length, "frame_length")
        if w is not None and w.shape[0] != L:
            raise ValueError(f"window length {w.shape[0]} != frame_length {L}")
    elif w is not None:
        L = w.shape[0]
    else:
        L = sig_len
    if L <= 0 or L > sig_len:
        raise ValueError(f"frame_length {L} must be in [1, signal_length={sig_len}]")
    if x.shape[-1] == 2:
        c = x[..., 0].astype(cdt) + 1j * x[..., 1].astype(cdt)
        is_real = False
    else:
        c = x[..., 0].astype(cdt)
        is_real = True
    if w is not None and np.iscomplexobj(w):
        is_real = False
    n_frames = (sig_len - L) // step + 1
    idx = np.arange(n_frames)[:, None] * step + np.arange(L)[None, :]  # [frames, L]
    frames = c[:, idx]  # [batch, frames, L]
    if w is not None:
        frames = frames * w.astype(cdt)
    y = np.fft.fft(frames, axis=-1)
    if onesided:
        if not is_real:
            raise ValueError("STFT onesided=1 requires a real signal and window")
        y = y[..., : L // 2 + 1]
    return np.asarray(np.stack([y.real, y.imag], axis=-1), dtype=dt)


# ---- windows ---------------------------------------------------------------------------------

def _window(size, periodic, output_datatype, coeffs):
    n = _scalar_int(size, "size")
    if n < 0:
        raise ValueError(f"window size must be non-negative, got {n}")
    out_dt = _np_dtype(output_datatype)
    denom = n if periodic else n - 1
    k = np.arange(n, dtype=np.float64)
    w = np.zeros(n, dtype=np.float64)
    if n == 1 and not periodic:
        # a one-point symmetric window is 0/0 in the formula; use the conventional [1] (as numpy does)
        return np.ones(1, dtype=out_dt)
    phase = 2.0 * np.pi * k / max(denom, 1)
    for m, a in enumerate(coeffs):
        w = w + a * np.cos(m * phase)
    return w.astype(out_dt)


@kernel("HannWindow", since=17)
def hann_window(size, *, output_datatype=1, periodic=1):
    return _window(size, periodic, output_datatype, (0.5, -0.5))


@kernel("HammingWindow", since=17)
def hamming_window(size, *, output_datatype=1, periodic=1):
    a0 = 25.0 / 46.0
    return _window(size, periodic, output_datatype, (a0, -(1.0 - a0)))


@kernel("BlackmanWindow", since=17)
def blackman_window(size, *, output_datatype=1, periodic=1):
    return _window(size, periodic, output_datatype, (0.42, -0.5, 0.08))


# ---- MelWeightMatrix -------------------------------------------------------------------------

@kernel("MelWeightMatrix", since=17)
def mel_weight_matrix(num_mel_bins, dft_length, sample_rate, lower_edge_hertz, upper_edge_hertz, *,
                      output_datatype=1):
    n_mel = _scalar_int(num_mel_bins, "num_mel_bins")
    n_dft = _scalar_int(dft_length, "dft_length")
    rate = _scalar_int(sample_rate, "sample_rate")
    lo = float(np.asarray(lower_edge_hertz).reshape(-1)[0])
    hi = float(np.asarray(upper_edge_hertz).reshape(-1)[0])
    if n_mel <= 0 or n_dft <= 0 or rate <= 0:
        raise ValueError("num_mel_bins, dft_length and sample_rate must be positive")
    if not 0 <= lo < hi:
        raise ValueError(f"need 0 <= lower_edge_hertz < upper_edge_hertz, got {lo}, {hi}")
    out_dt = _np_dtype(output_datatype)
    n_spec = n_dft // 2 + 1

    def to_mel(f):
        return 2595.0 * np.log10(1.0 + f / 700.0)

    lo_mel, hi_mel = to_mel(lo), to_mel(hi)
    pts = np.arange(n_mel + 2, dtype=np.float64)
    mel_step = (hi_mel - lo_mel) / (n_mel + 2)
    hz = 700.0 * (np.power(10.0, (pts * mel_step + lo_mel) / 2595.0) - 1.0)
    bins = np.floor((n_dft + 1) * hz / rate).astype(np.int64)

    left, center, right = bins[:-2][None, :], bins[1:-1][None, :], bins[2:][None, :]
    j = np.arange(n_spec)[:, None]
    out = np.zeros((n_spec, n_mel), dtype=np.float64)
    up_w = np.maximum(center - left, 1)
    rising = (j >= left) & (j <= center)
    out = np.where(rising, (j - left) / up_w, out)
    out = np.where((center == left) & (j == center), 1.0, out)
    down_w = np.maximum(right - center, 1)
    falling = (j >= center) & (j < right) & (right > center)
    out = np.where(falling, (right - j) / down_w, out)
    return out.astype(out_dt)
