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
