"""SFS region table and rendering (affpipe.static.sfs) on real aligned landmarks."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from affpipe.static import align, sfs
from support.static_support import real_aligned_landmarks

SIZE = 224
BROW = 0.2


def test_region_table():
    assert len(sfs.REGIONS) == 15
    assert len(set(sfs.REGION_NAMES)) == 15
    expected = {
        "eyebrow_left", "eyebrow_right", "eye_left", "eye_right", "nose", "cheekbone_left", "cheekbone_right",
        "cheek_left", "cheek_right", "mouth", "lips", "philtrum_left", "philtrum_right", "jaw_left", "jaw_right",
    }
    assert set(sfs.REGION_NAMES) == expected
    colours = [r.colour for r in sfs.REGIONS]
    assert len(set(colours)) == 15 and (0, 0, 0) not in colours
    # distinct enough to tell apart after any mild processing
    c = np.array(colours, float)
    d = np.sqrt(((c[:, None] - c[None]) ** 2).sum(-1)) + np.eye(15) * 1e9
    assert d.min() > 40
    for r in sfs.REGIONS:
        assert all(0 <= i < 68 for i in r.indices + r.hole)
        if r.kind == "polyline":
            assert r.name.startswith("eyebrow") and len(r.indices) == 5
        else:
            assert len(r.indices) >= 3
    # mirror symmetry of the table: left regions map onto right ones under the mirror permutation
    by_name = {r.name: r for r in sfs.REGIONS}
    for r in sfs.REGIONS:
        if r.name.endswith("_left"):
            twin = by_name[r.name.replace("_left", "_right")]
            assert set(align.MIRROR_68[list(r.indices)]) == set(twin.indices)


@pytest.mark.parametrize("which", [0, 5, -1])
def test_regions_on_real_landmarks(which):
    pts = real_aligned_landmarks(SIZE)[which]
    labels = sfs.region_labels(pts, size=SIZE, eyebrow_thickness=BROW)
    image = sfs.static_shape(pts, size=SIZE, eyebrow_thickness=BROW)
    assert image.shape == (SIZE, SIZE, 3) and image.dtype == np.uint8
    # every pixel is exactly one region colour or black
    colours = {tuple(c) for c in image.reshape(-1, 3)}
    assert colours <= {tuple(c) for c in sfs.PALETTE}
    np.testing.assert_array_equal(image, sfs.PALETTE[labels])
    hull = align.hull_mask(pts, size=SIZE)
    assert not labels[~hull].any(), "a region pixel lies outside the landmarks' convex hull"
    assert not image[~hull].any()
    masks = [sfs.region_mask(r, pts, size=SIZE, eyebrow_thickness=BROW) & hull for r in sfs.REGIONS]
    for k, (region, mask) in enumerate(zip(sfs.REGIONS, masks), start=1):
        visible = labels == k
        assert visible.sum() >= 10, f"{region.name} is (almost) empty"
        # painting order only settles shared edges: most of each region stays visible
        assert visible.sum() >= 0.6 * mask.sum(), f"{region.name} mostly painted over"
    # stand-alone regions overlap only along shared edges: their interiors (3x3 erosion) are disjoint
    interiors = [ndimage.binary_erosion(m, structure=np.ones((3, 3), bool)) for m in masks]
    for i in range(15):
        for j in range(i + 1, 15):
            both = int((interiors[i] & interiors[j]).sum())
            assert both == 0, (sfs.REGIONS[i].name, sfs.REGIONS[j].name, both)


def test_lips_ring_around_mouth_and_eyebrow_thickness_scales():
    pts = align.template_points(SIZE, margin=0.1)
    labels = sfs.region_labels(pts, size=SIZE, eyebrow_thickness=BROW)
    k_lips = sfs.REGION_NAMES.index("lips") + 1
    k_mouth = sfs.REGION_NAMES.index("mouth") + 1
    mouth_centre = np.round(pts[60:68].mean(0)).astype(int)
    assert labels[mouth_centre[1], mouth_centre[0]] == k_mouth
    upper_lip = np.round((pts[51] + pts[62]) / 2).astype(int)
    assert labels[upper_lip[1], upper_lip[0]] == k_lips
    thin = sfs.eyebrow_width(pts, eyebrow_thickness=0.1)
    thick = sfs.eyebrow_width(pts, eyebrow_thickness=0.2)
    assert thick == pytest.approx(2 * thin, abs=1)
    half = sfs.eyebrow_width(pts / 2, eyebrow_thickness=0.2)
    assert half == pytest.approx(thick / 2, abs=1)
    brow = sfs.REGIONS[sfs.REGION_NAMES.index("eyebrow_left")]
    a = sfs.region_mask(brow, pts, size=SIZE, eyebrow_thickness=0.1).sum()
    b = sfs.region_mask(brow, pts, size=SIZE, eyebrow_thickness=0.2).sum()
    assert 1.6 < b / a < 2.4
