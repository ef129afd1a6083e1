"""Training / test / cross-validation splits (6:2:1), by star or by spectrum.

Splitting by star puts every spectrum of one star on the same side, so the test set
measures how the network does on stars it has never seen. The paper split spectra at
random (``group`` = the spectrum), which lets epochs of one star land on both sides;
that option is kept to reproduce its numbers.
"""

from dataclasses import dataclass

import numpy as np

TRAIN = np.int8(0)
TEST = np.int8(1)
CV = np.int8(2)


def split_groups(groups: np.ndarray, fractions: tuple[float, float, float], seed: int) -> np.ndarray:
    """Assign each item to TRAIN, TEST or CV so that items of one group stay together.

    Parameters
    ----------
    groups : array_like, shape (n,), int64
        Group key per item (star id, or the item index to split items independently).
    fractions : tuple of (float, float, float)
        Relative sizes (train, test, cv), in numbers of groups.
    seed : int
        Seed of the random permutation of the groups.

    Returns
    -------
    ndarray, shape (n,), int8
        TRAIN / TEST / CV codes. Deterministic for a given seed and set of groups,
        whatever their order.
    """
    groups = np.asarray(groups, dtype=np.int64)
    unique, inverse = np.unique(groups, return_inverse=True)
    order = np.random.default_rng(seed).permutation(unique.size)
    weights = np.asarray(fractions, dtype=np.float64)
    bounds = np.round(np.cumsum(weights) / weights.sum() * unique.size).astype(np.int64)
    codes_by_rank = np.full(unique.size, TRAIN, dtype=np.int8)
    codes_by_rank[bounds[0] : bounds[1]] = TEST
    codes_by_rank[bounds[1] :] = CV
    group_codes = np.empty(unique.size, dtype=np.int8)
    group_codes[order] = codes_by_rank
    return group_codes[inverse]


@dataclass(frozen=True)
class TwoModelSplit:
    """One common test set; two different training/CV splits of the remaining items.

    Parameters
    ----------
    test : ndarray, shape (n,), bool
        The common test set.
    formal : ndarray, shape (n,), int8
        TRAIN / TEST / CV codes of the formal model.
    alternate : ndarray, shape (n,), int8
        TRAIN / TEST / CV codes of the alternate model.
    """

    test: np.ndarray  # (n,) bool
    formal: np.ndarray  # (n,) int8 codes
    alternate: np.ndarray  # (n,) int8 codes


def split_two_models(groups: np.ndarray, fractions: tuple[float, float, float], seed: int) -> TwoModelSplit:
    """Split for the formal and alternate models.

    The test set is held out once, so both models are evaluated on the same unseen items.
    The rest is split into training and CV sets twice, with different seeds, at the
    train:cv ratio of ``fractions``: each model learns from a different training set
    (as in the paper), and each keeps the 6:2:1 proportions.

    Parameters
    ----------
    groups : array_like, shape (n,), int64
        Group key per item, as for `split_groups`.
    fractions : tuple of (float, float, float)
        Relative sizes (train, test, cv); the paper's 6:2:1.
    seed : int
        Seed of the test split; the two training/CV splits use ``seed + 1`` and ``seed + 2``.

    Returns
    -------
    TwoModelSplit
        The common test set and each model's codes.

    Notes
    -----
    Two models on different training sets, split 6:2:1: the SPCANet paper (Wang et al.
    2020, ApJ 891, 23, sect. 3.2 and 4.1; SCIENCE.md).
    """
    groups = np.asarray(groups, dtype=np.int64)
    train, test, cv = fractions
    first = split_groups(groups, (train + cv, test, 0.0), seed)
    is_test = first == TEST
    codes = []
    for offset in (1, 2):
        model_codes = np.full(groups.shape, TEST, dtype=np.int8)
        rest = ~is_test
        model_codes[rest] = np.where(split_groups(groups[rest], (train, 0.0, cv), seed + offset) == TRAIN, TRAIN, CV)
        codes.append(model_codes)
    return TwoModelSplit(test=is_test, formal=codes[0], alternate=codes[1])
