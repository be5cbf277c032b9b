"""lrsa.paper: the published tables as printed, and our layer names mapped onto them."""

import pytest

from lrsa import paper


def test_vgg_names_and_paper_table():
    assert list(paper.VGG16_LAYER_NAMES.values()) == list(paper.PAPER_TABLE_I)
    assert paper.VGG16_LAYER_NAMES["features.40"] == "conv5-3"
    assert paper.VGG16_LAYER_NAMES["classifier.6"] == "fc3"
    for name, (a, b, ab) in paper.PAPER_TABLE_I.items():
        if name != "conv4-3":  # printed as 4.0 + 16.3 = 24.3 in the paper (kept verbatim)
            assert a + b == pytest.approx(ab, abs=0.11)


@pytest.mark.parametrize("table,names", [(paper.PAPER_TABLE_II, paper.NIN_LAYER_NAMES),
                                         (paper.PAPER_TABLE_IV, paper.ALEXNET_LAYER_NAMES)])
def test_every_paper_row_has_one_of_our_layers(table, names):
    assert sorted(names.values()) == sorted(table)
