"""Classes, colours and zoom of the map pages."""

from __future__ import annotations

import pytest

from maps.style import YL_OR_RD, fixed_classes, integer_classes, spread, zoom_for_bounds


def test_integer_classes_give_zero_its_own_class_and_split_the_rest_by_quantiles():
    classes = integer_classes([0, 0, 1, 1, 2, 3, 5, 8, 13, 40], classes=4)
    # Positive counts in terciles: [1, 1], [2, 3, 5], [8, 13, 40].
    assert classes.breaks == (0, 1, 2, 8)
    assert classes.labels == ("0", "1", "2–7", "≥ 8")
    assert classes.colors == (YL_OR_RD[0], YL_OR_RD[2], YL_OR_RD[5], YL_OR_RD[7])
    assert [classes.index(v) for v in (0, 1, 2, 3, 7, 8, 400)] == [0, 1, 2, 2, 2, 3, 3]
    assert classes.color(None) == "#cccccc"


def test_integer_classes_of_few_values_are_fewer():
    assert integer_classes([0, 0, 0]).breaks == (0,)
    assert integer_classes([0, 2, 2, None]).labels == ("0", "1", "≥ 2")
    with pytest.raises(ValueError, match="at least 2 classes"):
        integer_classes([1, 2], classes=1)


def test_spread_and_fixed_classes_check_their_input():
    assert spread("abc", 2) == ("a", "c")
    with pytest.raises(ValueError, match="has 3 colours, 4 were asked"):
        spread("abc", 4)
    with pytest.raises(ValueError, match="equal length"):
        fixed_classes([0, 1], ["#000"], ["a", "b"])
    with pytest.raises(ValueError, match="strictly ascending"):
        fixed_classes([1, 0], ["#000", "#111"], ["a", "b"])


def test_zoom_for_bounds_fits_the_box_on_the_screen():
    # 0.04° wide at 256 px per 360° · 2^z: 1024 px hold it at z log2(36000) = 15.14, but
    # its height (0.02° at 26°N, in Mercator) limits it a little more on 512 px.
    assert zoom_for_bounds([106.0, 26.0, 106.04, 26.02], 1024, 512) == pytest.approx(
        14.98, abs=0.01
    )
    # 50 times wider, the width limits: log2(36000 / 50) = 9.49.
    wide = zoom_for_bounds([106.0, 26.0, 108.0, 26.02], 1024, 512)
    assert wide == pytest.approx(9.49, abs=0.01)
    assert zoom_for_bounds([106.0, 26.0, 106.0, 26.0]) == 22.0
    with pytest.raises(ValueError, match="min_lon"):
        zoom_for_bounds([107.0, 26.0, 106.0, 27.0])
