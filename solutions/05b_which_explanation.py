"""Solutions to the exercises of notebooks/05b_which_explanation.ipynb.

A code exercise's solution is the function the learner writes (the check calls it on several inputs).
"""


def ig_linear(x, baseline, w):
    # Along the straight path x' + t (x - x') the gradient of y = w . x + b is w at every t, so the integral
    # of the gradient over t in [0, 1] is w itself, and IG = (x - x') * w. Completeness: the sum of the
    # attributions is w . x - w . x' = y(x) - y(x').
    return (x - baseline) * w
