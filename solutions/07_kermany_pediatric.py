"""Solutions to the exercises of notebooks/07_kermany_pediatric.ipynb.

A number exercise's solution is a function that returns the answer from the notebook's values; a code
exercise's solution is the function the learner writes (the check calls it on several inputs).
"""


def smallest_set(percent, decimals):
    half = 0.5 * 10**-decimals  # a reported 96.78 means anything in [96.775, 96.785]
    n = 1
    while True:
        k = round(percent * n / 100)  # the count of right answers closest to the reported share
        if abs(100 * k / n - percent) <= half + 1e-9:  # a little slack for floating-point rounding
            return n
        n += 1
    # smallest_set(96.78, 2) -> 311 and smallest_set(88.48, 2) -> 165: far more than the 16 images of the
    # official val folder, so the seed's validation accuracies were measured on something else


def always_pneumonia(n_normal, n_pneumonia):
    return n_pneumonia / (n_normal + n_pneumonia)  # 390 / 624 = 0.625 on the real test folder


def example_context(name):
    """Small, fast contexts for tests/test_exercises.py."""
    if name == "smallest_set":
        return {}
    if name == "always_pneumonia":
        return {"n_normal": 234, "n_pneumonia": 390}
    raise KeyError(name)
