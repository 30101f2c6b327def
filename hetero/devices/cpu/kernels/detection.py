"""Detection CPU kernels: NonMaxSuppression and RoiAlign.

NonMaxSuppression loops over (batch, class) pairs and over the boxes it selects; each selection
suppresses the remaining candidates with one vectorised IoU computation. RoiAlign loops over the
ROIs (each has its own adaptive sampling grid) and computes every bin's bilinear samples at once.
"""
from __future__ import annotations

import numpy as np

from ..registry import kernel


def _scalar(v, default, cast):
    if v is None:
        return default
    a = np.asarray(v)
    if a.size == 0:
        return default
    return cast(a.reshape(-1)[0])


@kernel("NonMaxSuppression", since=10)
def non_max_suppression(boxes, scores, max_output_boxes_per_class=None, iou_threshold=None,
                        score_threshold=None, *, center_point_box=0):
    boxes = np.asarray(boxes)
    scores = np.asarray(scores)
    if boxes.ndim != 3 or boxes.shape[2] != 4:
        raise ValueError(f"NonMaxSuppression: boxes must be (batches, boxes, 4), got {boxes.shape}")
    if scores.ndim != 3 or scores.shape[0] != boxes.shape[0] or scores.shape[2] != boxes.shape[1]:
        raise ValueError(f"NonMaxSuppression: scores shape {scores.shape} does not fit boxes "
                         f"{boxes.shape}")
    if center_point_box not in (0, 1):
        raise ValueError(f"NonMaxSuppression: center_point_box must be 0 or 1, got {center_point_box}")
    max_out = max(_scalar(max_output_boxes_per_class, 0, int), 0)
    iou_thr = _scalar(iou_threshold, 0.0, float)
    has_score_thr = score_threshold is not None and np.asarray(score_threshold).size > 0
    score_thr = _scalar(score_threshold, 0.0, float)
    if not 0.0 <= iou_thr <= 1.0:
        raise ValueError(f"NonMaxSuppression: iou_threshold must be in [0, 1], got {iou_thr}")

    b = boxes.astype(np.float64)
    if center_point_box == 0:
        y1 = np.minimum(b[..., 0], b[..., 2])
        y2 = np.maximum(b[..., 0], b[..., 2])
        x1 = np.minimum(b[..., 1], b[..., 3])
        x2 = np.maximum(b[..., 1], b[..., 3])
    else:
        xc, yc, w, h = b[..., 0], b[..., 1], b[..., 2], b[..., 3]
        x1, x2 = xc - w / 2, xc + w / 2
        y1, y2 = yc - h / 2, yc + h / 2
    area = (x2 - x1) * (y2 - y1)

    selected = []
    if max_out == 0:
        return np.zeros((0, 3), dtype=np.int64)
    for bi in range(boxes.shape[0]):
        coords = (x1[bi], y1[bi], x2[bi], y2[bi], area[bi])
        for ci in range(scores.shape[1]):
            sc = scores[bi, ci].astype(np.float64)
            cand = np.nonzero(sc > score_thr)[0] if has_score_thr else np.arange(sc.shape[0])
            if cand.size == 0:
                continue
            # descending score, ties broken by the lower box index
            order = cand[np.lexsort((cand, -sc[cand]))]
            for i in _greedy_nms(order, coords, iou_thr, max_out):
                selected.append((bi, ci, i))
    if not selected:
        return np.zeros((0, 3), dtype=np.int64)
    return np.asarray(selected, dtype=np.int64)


def _suppresses(a: np.ndarray, b: np.ndarray, coords, iou_thr: float) -> np.ndarray:
    """(len(a), len(b)) bool: box a[i] suppresses box b[j] (IoU > threshold, degenerate boxes never)."""
    x1, y1, x2, y2, area = coords
    iw = np.minimum(x2[a][:, None], x2[b][None, :]) - np.maximum(x1[a][:, None], x1[b][None, :])
    ih = np.minimum(y2[a][:, None], y2[b][None, :]) - np.maximum(y1[a][:, None], y1[b][None, :])
    inter = np.where((iw > 0) & (ih > 0), iw * ih, 0.0)
    aa, ab = area[a][:, None], area[b][None, :]
    union = aa + ab - inter
    ok = (inter > 0) & (aa > 0) & (ab > 0) & (union > 0)
    iou = inter / np.where(ok, union, 1.0)
    return ok & (iou > iou_thr)


_NMS_BLOCK = 256


def _greedy_nms(order: np.ndarray, coords, iou_thr: float, max_out: int) -> list[int]:
    """Greedy selection over score-sorted candidates, a block of candidates at a time: the IoU
    tests of a block against itself and against the boxes kept so far are single array ops."""
    kept: list[int] = []
    for start in range(0, order.size, _NMS_BLOCK):
        blk = order[start:start + _NMS_BLOCK]
        alive = np.ones(blk.size, dtype=bool)
        if kept:
            alive &= ~_suppresses(np.asarray(kept), blk, coords, iou_thr).any(axis=0)
        sup = _suppresses(blk, blk, coords, iou_thr)
        for pos in np.flatnonzero(alive):  # visits candidates in score order
            if not alive[pos]:
                continue
            kept.append(int(blk[pos]))
            if len(kept) >= max_out:
                return kept
            alive &= ~sup[pos]
        if len(kept) >= max_out:
            break
    return kept


def _roi_align(X, rois, batch_indices, *, coordinate_transformation_mode, mode, output_height,
               output_width, sampling_ratio, spatial_scale):
    X = np.asarray(X)
    rois = np.asarray(rois)
    bidx = np.asarray(batch_indices).astype(np.int64).reshape(-1)
    if X.ndim != 4:
        raise ValueError(f"RoiAlign: X must be (N, C, H, W), got {X.shape}")
    if rois.ndim != 2 or rois.shape[1] != 4 or rois.shape[0] != bidx.shape[0]:
        raise ValueError(f"RoiAlign: rois {rois.shape} / batch_indices {bidx.shape} mismatch")
    if mode not in ("avg", "max"):
        raise ValueError(f"RoiAlign: unknown mode {mode!r}")
    if coordinate_transformation_mode not in ("half_pixel", "output_half_pixel"):
        raise ValueError(f"RoiAlign: unknown coordinate_transformation_mode "
                         f"{coordinate_transformation_mode!r}")
    if np.any((bidx < 0) | (bidx >= X.shape[0])):
        raise ValueError("RoiAlign: batch_indices out of range")
    n, c, height, width = X.shape
    ph, pw = int(output_height), int(output_width)
    half_pixel = coordinate_transformation_mode == "half_pixel"
    offset = 0.5 if half_pixel else 0.0
    cdt = np.float64 if X.dtype == np.float64 else np.float32
    out = np.zeros((rois.shape[0], c, ph, pw), dtype=cdt)
    r64 = rois.astype(np.float64)
    for k in range(rois.shape[0]):  # loop over ROIs; each ROI's bins are vectorised
        x0 = r64[k, 0] * spatial_scale - offset
        y0 = r64[k, 1] * spatial_scale - offset
        x1 = r64[k, 2] * spatial_scale - offset
        y1 = r64[k, 3] * spatial_scale - offset
        rw, rh = x1 - x0, y1 - y0
        if not half_pixel:
            rw, rh = max(rw, 1.0), max(rh, 1.0)
        bh, bw = rh / ph, rw / pw
        gh = int(sampling_ratio) if sampling_ratio > 0 else int(np.ceil(rh / ph))
        gw = int(sampling_ratio) if sampling_ratio > 0 else int(np.ceil(rw / pw))
        count = max(gh * gw, 1)
        if gh <= 0 or gw <= 0:
            continue  # empty sampling grid: the output stays 0
        # sample coordinates: (ph, gh) along y, (pw, gw) along x
        ys = y0 + np.arange(ph)[:, None] * bh + (np.arange(gh)[None, :] + 0.5) * bh / gh
        xs = x0 + np.arange(pw)[:, None] * bw + (np.arange(gw)[None, :] + 0.5) * bw / gw
        yl, yh, wy_lo, wy_hi, vy = _bilinear_axis(ys.reshape(-1), height)
        xl, xh, wx_lo, wx_hi, vx = _bilinear_axis(xs.reshape(-1), width)
        if mode == "avg":
            # bilinear sampling and the bin average are separable: out = Wy @ img @ Wx^T,
            # restricted to the rows/columns the ROI's samples touch
            y_lo, y_hi = int(yl.min()), int(yh.max()) + 1
            x_lo, x_hi = int(xl.min()), int(xh.max()) + 1
            img = X[bidx[k], :, y_lo:y_hi, x_lo:x_hi].astype(cdt)
            wy = _interp_matrix(yl - y_lo, yh - y_lo, wy_lo * vy, wy_hi * vy, y_hi - y_lo)
            wx = _interp_matrix(xl - x_lo, xh - x_lo, wx_lo * vx, wx_hi * vx, x_hi - x_lo)
            wy = wy.reshape(ph, gh, -1).sum(axis=1).astype(cdt)
            wx = wx.reshape(pw, gw, -1).sum(axis=1).astype(cdt)
            s = np.matmul(np.matmul(wy, img), wx.T) / cdt(count)  # (C, ph, pw)
        else:
            img = X[bidx[k]].astype(cdt)  # (C, H, W)
            # corner values (C, Sy, Sx) with Sy = ph*gh, Sx = pw*gw
            v1 = img[:, yl[:, None], xl[None, :]]
            v2 = img[:, yl[:, None], xh[None, :]]
            v3 = img[:, yh[:, None], xl[None, :]]
            v4 = img[:, yh[:, None], xh[None, :]]
            valid = (vy[:, None] & vx[None, :]).astype(cdt)
            w1 = (wy_lo[:, None] * wx_lo[None, :]) * valid
            w2 = (wy_lo[:, None] * wx_hi[None, :]) * valid
            w3 = (wy_hi[:, None] * wx_lo[None, :]) * valid
            w4 = (wy_hi[:, None] * wx_hi[None, :]) * valid
            s = np.maximum(np.maximum(w1 * v1, w2 * v2), np.maximum(w3 * v3, w4 * v4))
            s = s.reshape(c, ph, gh, pw, gw).max(axis=(2, 4))
        out[k] = s
    return out.astype(X.dtype)


def _interp_matrix(lo, hi, w_lo, w_hi, size):
    """(samples, size) matrix whose rows hold each sample's two bilinear weights."""
    m = np.zeros((lo.shape[0], size), dtype=np.float64)
    rows = np.arange(lo.shape[0])
    np.add.at(m, (rows, lo), w_lo)
    np.add.at(m, (rows, hi), w_hi)
    return m


def _bilinear_axis(p: np.ndarray, size: int):
    """Low/high indices, their weights and the in-range flag for sample positions ``p``."""
    valid = (p >= -1.0) & (p <= size)
    p = np.maximum(p, 0.0)
    low = np.floor(p).astype(np.int64)
    at_end = low >= size - 1
    low = np.where(at_end, size - 1, low)
    high = np.where(at_end, size - 1, low + 1)
    p = np.where(at_end, low.astype(np.float64), p)
    frac = p - low
    return low, high, 1.0 - frac, frac, valid


@kernel("RoiAlign", since=10)
def roi_align_10(X, rois, batch_indices, *, mode="avg", output_height=1, output_width=1,
                 sampling_ratio=0, spatial_scale=1.0):
    return _roi_align(X, rois, batch_indices, coordinate_transformation_mode="output_half_pixel",
                      mode=mode, output_height=output_height, output_width=output_width,
                      sampling_ratio=sampling_ratio, spatial_scale=spatial_scale)


@kernel("RoiAlign", since=16)
def roi_align(X, rois, batch_indices, *, coordinate_transformation_mode="half_pixel", mode="avg",
              output_height=1, output_width=1, sampling_ratio=0, spatial_scale=1.0):
    return _roi_align(X, rois, batch_indices,
                      coordinate_transformation_mode=coordinate_transformation_mode, mode=mode,
                      output_height=output_height, output_width=output_width,
                      sampling_ratio=sampling_ratio, spatial_scale=spatial_scale)
