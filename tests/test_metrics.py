import numpy as np
import pandas as pd
import pytest

from dmole_lab.analysis import metrics

# Hand-built 3-task matrix: row 0 zero-shot, row t after stage t.
A = np.array([
    [10.0, 20.0, 30.0],
    [80.0, 25.0, 35.0],
    [60.0, 90.0, 40.0],
    [50.0, 70.0, 100.0],
])


def test_last_avg_mft():
    assert metrics.last(A) == pytest.approx((50 + 70 + 100) / 3)
    # AVG = mean over t of mean_{i<=t} a[t, i] = (80 + (60+90)/2 + (50+70+100)/3) / 3
    assert metrics.avg(A) == pytest.approx((80 + 75 + 220 / 3) / 3)
    assert metrics.mft(A) == pytest.approx((80 + 90 + 100) / 3)


def test_bwt_both_divisors():
    # (50-80) + (70-90) = -50
    assert metrics.bwt(A) == pytest.approx(-50 / 2)
    assert metrics.bwt(A, divisor="T") == pytest.approx(-50 / 3)
    with pytest.raises(ValueError, match="allowed: T-1, T"):
        metrics.bwt(A, divisor="n")


def test_forgetting_first_and_max():
    assert metrics.forgetting(A, "first") == pytest.approx(((80 - 50) + (90 - 70)) / 2)
    B = A.copy()
    B[2, 0] = 95.0  # task 1 peaks after stage 2
    assert metrics.forgetting(B, "max") == pytest.approx(((95 - 50) + (90 - 70)) / 2)
    assert metrics.forgetting(B, "first") == pytest.approx(((80 - 50) + (90 - 70)) / 2)


def test_fwt():
    # a[1, 2] - b_2 = 25 - 20; a[2, 3] - b_3 = 40 - 30
    assert metrics.fwt(A) == pytest.approx((5 + 10) / 2)


def test_single_task_and_bad_shape():
    one = np.array([[5.0], [50.0]])
    assert np.isnan(metrics.bwt(one)) and metrics.last(one) == 50.0
    with pytest.raises(ValueError, match="shape"):
        metrics.last(np.zeros((3, 3)))


def test_matrix_from_tidy_scores():
    rows = [{"stage": t, "eval_task": task, "value": A[t, i]}
            for t in range(4) for i, task in enumerate(["x", "y", "z"])]
    M = metrics.matrix_from_scores(pd.DataFrame(rows), ["x", "y", "z"])
    np.testing.assert_allclose(M, A)
    with pytest.raises(ValueError, match="lacks stage"):
        metrics.matrix_from_scores(pd.DataFrame(rows[:6]), ["x", "y", "z"])
