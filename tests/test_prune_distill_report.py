"""A prune-then-distill run's report and plots (pdjax.designs.prune_distill.report)."""

import pytest

from pdjax import render


def test_curves_of_one_stage_over_seeds_are_drawn_as_their_mean():
    curves = {"teacher": [0.1, 0.2], "s_seed0": [0.2, 0.4, 0.5], "s_seed1": [0.4, 0.6], "vgg11/t_seed2": [0.3]}
    assert render.mean_over_seeds(curves) == {
        "teacher": [0.1, 0.2], "s (mean of 2 seeds)": [pytest.approx(0.3), pytest.approx(0.5)],
        "vgg11/t_seed2": [0.3]}
