"""io.channel_order: channels matched by the names their files give them."""

from __future__ import annotations

import dask.array as da
import numpy as np

from napari_medml.io.channel_order import in_channel_order, match_channels


def test_names_in_another_order_give_the_order_and_other_names_a_warning() -> None:
    assert match_channels(["a", "b"], ["a", "b"], "x") == (None, None)
    assert match_channels(None, ["a", "b"], "x") == (None, None)
    assert match_channels(["a", "b"], [], "x") == (None, None)
    order, line = match_channels(["Membrane", "Nuclei", "Actin"], ["Actin", "Membrane", "Nuclei"], "image 'b'")
    assert order == [1, 2, 0]
    assert line == ("image 'b' stores its channels as Actin, Membrane, Nuclei; the model was trained on Membrane, "
                    "Nuclei, Actin: taken in that order")
    order, line = match_channels(["a", "b"], ["a", "c"], "image 'c'")
    assert order is None and line.startswith("warning: image 'c' names its channels a, c, but the model was trained")
    assert match_channels(["a", "a"], ["a", "a"], "x") == (None, None)
    assert match_channels(["a", "b"], ["b", "b"], "x")[0] is None  # not a permutation: no order


def test_channels_are_taken_in_order_in_numpy_and_dask() -> None:
    data = np.arange(2 * 3 * 4).reshape(3, 2, 4)  # channels on axis 1
    expected = data[:, [1, 0]]
    np.testing.assert_array_equal(in_channel_order(data, 1, [1, 0]), expected)
    lazy = in_channel_order(da.from_array(data, chunks=(1, 1, 4)), 1, [1, 0])
    assert isinstance(lazy, da.Array)
    np.testing.assert_array_equal(lazy.compute(), expected)
