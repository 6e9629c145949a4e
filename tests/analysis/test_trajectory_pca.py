"""The PCA plot of a few trajectories on a zoo whose traced tensor has several sizes."""

import numpy as np

from weightzoo.analysis.trajectory_plots import plot_pca


def test_traces_of_another_size_are_left_out_not_an_error(tmp_path):
    rng = np.random.default_rng(0)
    examples = {"width 8 a": rng.normal(size=(40, 8)), "width 8 b": rng.normal(size=(30, 8)),
                "width 16": rng.normal(size=(40, 16))}
    path = tmp_path / "pca.png"
    plot_pca(examples, path)  # numpy refused to pool 8- and 16-value points before
    assert path.stat().st_size > 0
