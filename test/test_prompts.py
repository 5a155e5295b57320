import numpy as np
import pytest

from seem_ros.inference.prompts import PromptError, VisualPrompt, rasterize


def r(prompts, orig=(100, 200), inp=(50, 100), pad=(64, 128), **kw):
    return rasterize(prompts, orig, inp, pad, **kw)


def test_click_scaled_and_dilated():
    pos, neg = r([VisualPrompt(points=[[100, 50], [20, 20]], labels=[1, 0])])
    assert pos.shape == neg.shape == (1, 64, 128)
    assert pos[0, 25, 50] and pos[0].sum() == 9                 # 3x3 square at the scaled click
    assert neg[0, 10, 10] and neg[0].sum() == 9


def test_box_filled_and_clipped_to_image_not_padding():
    pos, _ = r([VisualPrompt(boxes=[[150, 60, 400, 300]])])
    assert pos[0, 30:50, 75:100].all()
    assert not pos[0, 50:].any() and not pos[0, :, 100:].any()    # padding stays empty


def test_polygon_and_scribble():
    pos, _ = r([VisualPrompt(polygons=[np.array([[0, 0], [100, 0], [0, 100]])])])
    assert pos[0, 5, 5] and not pos[0, 40, 45]
    pos, _ = r([VisualPrompt(scribbles=[np.array([[10, 10], [190, 10]])])], line_width=3)
    assert pos[0, 5, 5:95].all()


def test_mask_prompt_resized_and_checked():
    m = np.zeros((100, 200), bool)
    m[:50, :100] = True
    pos, _ = r([VisualPrompt(mask=m)])
    assert pos[0, :25, :50].all() and pos[0].sum() == 25 * 50
    with pytest.raises(PromptError):
        r([VisualPrompt(mask=np.ones((10, 10), bool))])


def test_empty_or_outside_prompt_rejected():
    with pytest.raises(PromptError):
        r([VisualPrompt(points=[[-10, -10]])])
    with pytest.raises(PromptError):
        r([VisualPrompt(points=[[10, 10]], labels=[0])])          # only negative
    with pytest.raises(PromptError):
        r([VisualPrompt(points=[[10, 10], [20, 20]], labels=[1])])


def test_negative_never_overlaps_positive():
    pos, neg = r([VisualPrompt(points=[[100, 50], [101, 51]], labels=[1, 0])])
    assert not (pos & neg).any()


@pytest.mark.parametrize("shape,size", [((480, 640), (240, 320)), ((720, 960), (240, 320)),
                                        ((720, 1280), (240, 427)), ((99, 96), (33, 32)), ((100, 90), (33, 30)),
                                        ((240, 320), (240, 320))])
def test_mask_resize_takes_the_nearest_pixel(shape, size):
    """Output pixel (i, j) is input pixel floor((i + 0.5) * h / size), for whole factors (a strided
    slice) and others alike; the result is a new array."""
    from seem_ros.inference.prompts import resize_mask
    m = np.random.default_rng(0).random(shape) > 0.5
    rows = np.floor((np.arange(size[0]) + 0.5) * shape[0] / size[0]).astype(int)
    cols = np.floor((np.arange(size[1]) + 0.5) * shape[1] / size[1]).astype(int)
    before = m.copy()
    out = resize_mask(m, size)
    assert out.shape == size and np.array_equal(out, m[np.ix_(rows, cols)])
    out[:] = ~out
    assert np.array_equal(m, before)                                          # m untouched


def test_cropped_prompt_is_the_same_prompt_in_crop_pixels():
    m = np.zeros((100, 200), bool)
    m[40:60, 50:90] = True
    p = VisualPrompt(points=[[60, 50], [10, 10]], labels=[1, 0], boxes=[[50, 40, 90, 60]],
                     scribbles=[np.array([[55, 45], [85, 55]])], mask=m, negative_mask=~m)
    box = (40, 30, 120, 70)
    c = p.cropped(box)
    np.testing.assert_allclose(c.points, [[20, 20], [-30, -20]])
    assert list(c.labels) == [1, 0]
    np.testing.assert_allclose(c.boxes, [[10, 10, 50, 30]])
    np.testing.assert_allclose(c.scribbles[0], [[15, 15], [45, 25]])
    assert c.mask.shape == (40, 80) and c.mask.sum() == m.sum()
    # rasterised on the crop, the crop's pixels of the full prompt
    full, _ = rasterize([p], (100, 200), (100, 200), (128, 224))
    crop, _ = rasterize([c], (40, 80), (40, 80), (64, 96))
    assert (crop[0, :40, :80] == full[0, 30:70, 40:120]).all()


def test_prompt_extent_covers_every_mark():
    m = np.zeros((100, 200), bool)
    m[70:80, 150:160] = True
    p = VisualPrompt(points=[[5, 6]], labels=[0], boxes=[[20, 20, 30, 40]], mask=m)
    e = p.extent()
    np.testing.assert_allclose(e.min(0), [5, 6])
    np.testing.assert_allclose(e.max(0), [160, 80])
    assert VisualPrompt().extent() is None


def _reference_polyline(canvas, pts, width):
    """The first, point-by-point drawing (the definition the vectorised one must keep)."""
    r = max(width // 2, 0)
    h, w = canvas.shape
    if len(pts) == 1:
        pts = np.concatenate([pts, pts])
    for a, b in zip(pts[:-1], pts[1:]):
        n = int(np.ceil(np.abs(b - a).max())) + 1
        for x, y in np.linspace(a, b, n):
            cx, cy = int(np.floor(x)), int(np.floor(y))
            canvas[max(cy - r, 0):max(min(cy + r + 1, h), 0), max(cx - r, 0):max(min(cx + r + 1, w), 0)] = True


def _reference_polygon(poly, size):
    h, w = size
    out = np.zeros(size, bool)
    x0, y0 = np.clip(np.floor(poly.min(0)).astype(int), 0, [w, h])
    x1, y1 = np.clip(np.ceil(poly.max(0)).astype(int) + 1, 0, [w, h])
    if x1 <= x0 or y1 <= y0:
        return out
    ys, xs = np.mgrid[y0:y1, x0:x1] + 0.5
    inside = np.zeros(xs.shape, bool)
    for (ax, ay), (bx, by) in zip(poly, np.roll(poly, -1, axis=0)):
        crosses = (ay > ys) != (by > ys)
        with np.errstate(divide="ignore", invalid="ignore"):
            xi = ax + (ys - ay) * (bx - ax) / (by - ay)
        inside ^= crosses & (xs < xi)
    out[y0:y1, x0:x1] = inside
    return out


def test_scribbles_and_polygons_drawn_at_once_equal_the_point_by_point_definition():
    from seem_ros.inference.prompts import _fill_polygon, _polyline
    rng = np.random.default_rng(0)
    for k in range(60):
        size = (int(rng.integers(20, 80)), int(rng.integers(20, 80)))
        # vertices on and a little past the canvas (the drawing clips them)
        pts = rng.uniform(-0.2, 1.2, (int(rng.integers(1, 30)), 2)) * size[::-1]
        if k % 3 == 0:
            pts = np.round(pts)                        # axis-aligned and repeated vertices
        for width in (1, 3, 5):
            got, want = np.zeros(size, bool), np.zeros(size, bool)
            inside = pts.clip(0, np.array(size[::-1]) - 1)
            _polyline(got, inside, width)
            _reference_polyline(want, inside, width)
            assert (got == want).all(), (k, width)
        assert (_fill_polygon(pts, size) == _reference_polygon(pts, size)).all(), k


def test_far_and_non_finite_scribble_vertices():
    from seem_ros.inference.prompts import _polyline
    c = np.zeros((40, 60), bool)
    _polyline(c, np.array([[10.0, 20.0], [1e12, 20.0]]), 3)      # drawn to the edge, no 1e12 points
    want = np.zeros((40, 60), bool)
    want[19:22, 9:] = True
    assert (c == want).all()
    c[:] = False
    _polyline(c, np.array([[5.0, 5.0], [np.nan, 7.0], [20.0, 5.0], [30.0, 5.0]]), 1)
    assert c[5, 20:31].all() and c.sum() == 11                  # segments touching NaN: nothing
