"""The shared fixed-point helpers: hand-derived golden values, the Lava expressions they
match (restated here as oracles; Lava itself is not imported), property tests of the
weight quantizer, and callability from inside @njit code."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from numba import njit

from neuro_hts.errors import ConfigError
from neuro_hts.hardware import fixed_point as fp

BITS24 = 2**23


# ----------------------------------------------------------------------------- shifts


def test_toward_zero_differs_from_numpy_shift_on_negatives():
    assert (-5) >> 1 == -3  # NumPy / Python: toward minus infinity
    assert fp.shift_right_round_toward_zero(-5, 1) == -2
    assert fp.shift_right_floor(-5, 1) == -3
    assert fp.shift_right_round_toward_zero(5, 1) == fp.shift_right_floor(5, 1) == 2
    # Lava LIF: a decay product of -1 shifted by 12 stays 0 (toward zero), not -1 (floor)
    assert fp.shift_right_round_toward_zero(-1, 12) == 0
    assert fp.shift_right_floor(-1, 12) == -1


@pytest.mark.parametrize("n", [0, 1, 2, 3, 12])
def test_shifts_match_exact_rational_rounding(n):
    x = np.arange(-10000, 10001, dtype=np.int64)
    q = x / 2.0**n  # exact in float64 at this size
    np.testing.assert_array_equal(fp.shift_right_round_toward_zero(x, n), np.trunc(q))
    np.testing.assert_array_equal(fp.shift_right_floor(x, n), np.floor(q))
    np.testing.assert_array_equal(fp.shift_right_round_nearest(x, n), np.floor(q + 0.5))


def test_round_nearest_golden():
    np.testing.assert_array_equal(fp.shift_right_round_nearest(np.array([-7, -5, -3, 3, 5, 7]), 1), [-3, -2, -1, 2, 3, 4])


def test_toward_zero_equals_lava_lif_expression():
    # lava/proc/lif/models.py: np.sign(p) * np.right_shift(np.abs(p), 12), p int64
    rng = np.random.default_rng(0)
    p = rng.integers(-(2**36), 2**36, size=10000, dtype=np.int64)
    lava = np.sign(p) * np.right_shift(np.abs(p), 12)
    np.testing.assert_array_equal(fp.shift_right_round_toward_zero(p, 12), lava)


def test_helpers_accept_narrow_ints_return_int64_and_refuse_floats():
    x = np.array([-300, 300], dtype=np.int32)
    out = fp.shift_right_round_toward_zero(x, 2)
    assert out.dtype == np.int64
    np.testing.assert_array_equal(out, [-75, 75])
    np.testing.assert_array_equal(fp.saturate(np.array([65535], dtype=np.uint16), 16), [32767])
    with pytest.raises(TypeError):
        fp.shift_right_round_toward_zero(np.array([1.5]), 1)


# ----------------------------------------------------------------------- saturate / wrap


def test_saturate_24_bit_bounds_match_lava_voltage_limits():
    x = np.array([-(2**30), -BITS24 - 1, -BITS24, -BITS24 + 1, -1, 0, 1, BITS24 - 1, BITS24, 2**30])
    out = fp.saturate(x, 24)
    assert out.max() == BITS24 - 1 == 8388607
    assert out.min() == -(BITS24 - 1)  # symmetric: -2**23 is never produced
    np.testing.assert_array_equal(out, np.clip(x, -BITS24 + 1, BITS24 - 1))  # Lava's np.clip


def test_saturate_small_widths():
    np.testing.assert_array_equal(fp.saturate(np.arange(-10, 11), 4), np.clip(np.arange(-10, 11), -7, 7))


def test_wrap_is_a_twos_complement_register():
    x = np.array([-(2**40) - 5, -(2**24) - 1, -BITS24 - 1, -BITS24, -1, 0, BITS24 - 1, BITS24, BITS24 + 3, 2**24 + 7, 2**40 + 5])
    want = np.array([((int(v) + BITS24) % 2**24) - BITS24 for v in x])
    out = fp.wrap(x, 24)
    np.testing.assert_array_equal(out, want)
    assert out.min() >= -BITS24 and out.max() <= BITS24 - 1
    assert fp.wrap(BITS24, 24) == -BITS24 and fp.wrap(BITS24 + 3, 24) == -BITS24 + 3
    np.testing.assert_array_equal(fp.wrap(np.arange(-8, 8), 4), np.arange(-8, 8))  # in range: unchanged


def _lava_current_wrap(x):
    # lava/proc/lif/models.py, AbstractPyLifModelFixed.subthr_dynamics (current u)
    m = BITS24
    w = np.where(x > m, x - 2 * m, x)
    return np.where(w <= -m, x + 2 * m, w)


def test_wrap_agrees_with_lava_current_wrap_except_at_plus_minus_two_pow_23():
    x = np.concatenate([np.arange(-(2**24) + 1, -(2**24) + 2000), np.arange(-3000, 3000), np.arange(2**24 - 2000, 2**24)])
    x = x[np.abs(x) != BITS24]
    np.testing.assert_array_equal(fp.wrap(x, 24), _lava_current_wrap(x))
    # the documented difference: Lava keeps +2**23 (not a 24-bit value) and maps -2**23 to +2**23
    edge = np.array([BITS24, -BITS24])
    np.testing.assert_array_equal(_lava_current_wrap(edge), [BITS24, BITS24])
    np.testing.assert_array_equal(fp.wrap(edge, 24), [-BITS24, -BITS24])


# ----------------------------------------------------------------------------- decays


def _iterate(s, a, decay, steps, step=fp.leaky_decay_step):
    out = [int(s)]
    for _ in range(steps):
        s = step(s, a, decay, 12)
        out.append(int(s))
    return out


def test_decay_half_halves_the_distance_rounding_the_step_toward_zero():
    # dt = 0.5 -> decay 2048: steps 500, 250, 125, 62 (of 62.5), 31 (of 31.5), 16, 8, 4, 2, 1, then 0
    up = _iterate(0, 1000, 2048, 12)
    assert up == [0, 500, 750, 875, 937, 968, 984, 992, 996, 998, 999, 999, 999]
    down = _iterate(0, -1000, 2048, 12)
    assert down == [-v for v in up]  # toward zero: odd-symmetric


def test_floor_rounding_would_break_the_symmetry():
    def floor_step(s, a, d, bits):
        return s + ((d * (a - s)) >> bits)

    assert _iterate(0, -1000, 2048, 4, floor_step) == [0, -500, -750, -875, -938]
    assert _iterate(0, -1000, 2048, 4) == [0, -500, -750, -875, -937]


def test_decay_one_jumps_to_target():
    rng = np.random.default_rng(1)
    s = rng.integers(-BITS24 + 1, BITS24, 1000)
    a = rng.integers(-BITS24 + 1, BITS24, 1000)
    np.testing.assert_array_equal(fp.leaky_decay_step(s, a, 4096, 12), a)


def test_decay_1_dead_zone():
    # decay 1 (dt = 1/4096): distance < 4096 never moves; 4096 moves by exactly 1
    s = np.zeros(6, dtype=np.int64)
    a = np.array([1, -1, 4095, -4095, 4096, -4096])
    np.testing.assert_array_equal(fp.leaky_decay_step(s, a, 1, 12), [0, 0, 0, 0, 1, -1])
    assert _iterate(100, 100 + 4095, 1, 50)[-1] == 100


@pytest.mark.parametrize("decay", [1, 3, 100, 1000, 2048, 4095])
def test_iteration_settles_inside_the_documented_dead_zone(decay):
    s, a = np.int64(-BITS24 + 1), np.int64(BITS24 - 1)
    for _ in range(200000):
        nxt = fp.leaky_decay_step(s, a, decay, 12)
        if nxt == s:
            break
        s = nxt
    dist = int(a - s)
    assert dist * decay < 4096  # stalls exactly when decay * |a - s| < 2**12
    assert dist <= -(-4096 // decay) - 1


@settings(max_examples=300, deadline=None)
@given(
    s=st.integers(-BITS24 + 1, BITS24 - 1),
    a=st.integers(-BITS24 + 1, BITS24 - 1),
    decay=st.integers(0, 4096),
)
def test_leaky_step_matches_integer_oracle_and_stays_between(s, a, decay):
    p = decay * (a - s)
    want = s + (abs(p) >> 12) * (1 if p >= 0 else -1)
    got = int(fp.leaky_decay_step(s, a, decay, 12))
    assert got == want
    assert min(s, a) <= got <= max(s, a)
    assert int(fp.leaky_decay_step(-s, -a, decay, 12)) == -got


def test_multiplicative_decay_equals_lava_lif_and_differs_from_leaky_step():
    rng = np.random.default_rng(2)
    v = rng.integers(-BITS24 + 1, BITS24, 5000)
    d = rng.integers(0, 4097, 5000)
    p = np.int64(v) * (4096 - d)
    lava = np.sign(p) * np.right_shift(np.abs(p), 12)
    np.testing.assert_array_equal(fp.multiplicative_decay(v, d, 12), lava)
    # 5 * 2048 / 4096 = 2.5: Lava keeps 2 (retained part toward zero), the leaky step keeps 3
    assert fp.multiplicative_decay(5, 2048, 12) == 2
    assert fp.leaky_decay_step(5, 0, 2048, 12) == 3


def test_dt_to_decay_golden_and_inverse():
    dt = np.array([0.5, 1.0, 1 / 4096, 0.25, 0.1])
    np.testing.assert_array_equal(fp.dt_to_decay(dt), [2048, 4096, 1, 1024, 410])  # 409.6 -> 410
    assert fp.dt_to_decay(dt).dtype == np.int64
    decays = np.arange(1, 4097)
    np.testing.assert_array_equal(fp.dt_to_decay(fp.decay_to_dt(decays)), decays)
    assert fp.decay_to_dt(2048) == 0.5
    np.testing.assert_array_equal(fp.dt_to_decay([0.5, 0.25], decay_bits=4), [8, 4])


@pytest.mark.parametrize(
    "dt, where",
    [
        ([0.5, 0.2, 0.0001], "dt[2] = 0.0001"),  # 0.41 rounds to 0
        ([1.01, 0.5], "dt[0] = 1.01"),  # 4137 > 4096
        ([0.5, float("nan")], "dt[1] = nan"),
        ([0.5, -0.5], "dt[1] = -0.5"),
        ([[0.5, 0.5], [0.5, 2.0]], "dt[1, 1] = 2.0"),
        (0.0, "dt = 0.0"),
    ],
)
def test_dt_to_decay_refuses_unrepresentable_dt_naming_the_neuron(dt, where):
    with pytest.raises(ConfigError) as ei:
        fp.dt_to_decay(np.array(dt))
    msg = str(ei.value)
    assert where in msg and "[1, 4096]" in msg and "\n" not in msg


def test_dt_to_decay_boundaries():
    assert fp.dt_to_decay(0.5 / 4096 + 1e-12) == 1  # just rounds up to 1
    assert fp.dt_to_decay(1.0 + 0.49 / 4096) == 4096
    with pytest.raises(ConfigError):
        fp.dt_to_decay(0.49 / 4096)


# ------------------------------------------------------------------------- quantizer


def test_quantize_golden_loihi_even():
    w = np.array([0.5, -0.3, 0.001, 0.99])
    q = fp.quantize_weights(w, 8, (-8, 7), even=True)
    # max|w| = 0.99 <= 254 * 2**-8 = 0.992 -> exponent -8; units of 2 * 2**-8
    assert (q.exponent, q.scale) == (-8, 2.0**-8)
    np.testing.assert_array_equal(q.mantissas, [128, -76, 0, 254])  # -76.8 -> -38.4 LSBs -> -38
    assert q.mantissas.dtype == np.int64
    np.testing.assert_array_equal(fp.dequantize(q.mantissas, q.exponent), [0.5, -76 / 256, 0.0, 254 / 256])


def test_quantize_chooses_smallest_covering_exponent():
    # int8 (7 magnitude bits): 127 * 2**-7 < 1.0 <= 127 * 2**-6
    assert fp.quantize_weights([1.0, -0.2], 7, (-20, 20)).exponent == -6
    assert fp.quantize_weights([127.0], 7, (-20, 20)).exponent == 0
    assert fp.quantize_weights([127.5], 7, (-20, 20)).exponent == 1
    assert fp.quantize_weights([0.0, 0.0], 7, (-3, 5)).exponent == -3  # all zero: the minimum
    assert fp.quantize_weights([1e-9], 7, (-3, 5)).mantissas[0] == 0  # underflows to 0


def test_quantize_even_integers_round_trip_like_lava_dense():
    w = np.arange(-254, 255, 2).astype(np.float64)
    q = fp.quantize_weights(w, 8, (-8, 7), even=True)
    assert q.exponent == 0
    np.testing.assert_array_equal(q.mantissas, w.astype(np.int64))


def test_quantize_refusals():
    with pytest.raises(ConfigError, match="exceed the largest representable"):
        fp.quantize_weights([300.0], 8, (-8, 0), even=True)  # 254 * 2**0 < 300
    with pytest.raises(ConfigError, match="NaN"):
        fp.quantize_weights([0.1, np.nan], 8, (-8, 7))
    with pytest.raises(ConfigError, match="Generator"):
        fp.quantize_weights([0.1], 8, (-8, 7), rounding="stochastic")
    with pytest.raises(ConfigError, match="Generator"):
        fp.quantize_weights([0.1], 8, (-8, 7), rounding="stochastic", rng=np.random.RandomState(0))
    with pytest.raises(ConfigError, match="rounding"):
        fp.quantize_weights([0.1], 8, (-8, 7), rounding="up")
    with pytest.raises(ConfigError, match="exponent_range"):
        fp.quantize_weights([0.1], 8, (3, -3))
    with pytest.raises(ConfigError, match="mantissa_bits"):
        fp.quantize_weights([0.1], 1, (-8, 7), even=True)


weights_st = hnp.arrays(
    np.float64,
    hnp.array_shapes(min_dims=1, max_dims=2, max_side=12),
    elements=st.floats(-1000.0, 1000.0, allow_nan=False, allow_subnormal=False),
)


@settings(max_examples=200, deadline=None)
@given(w=weights_st, mantissa_bits=st.integers(2, 12), even=st.booleans(), stochastic=st.booleans(), seed=st.integers(0, 2**31))
def test_quantizer_properties(w, mantissa_bits, even, stochastic, seed):
    w_before = w.copy()
    rounding = "stochastic" if stochastic else "nearest"
    q = fp.quantize_weights(w, mantissa_bits, (-40, 20), even=even, rounding=rounding, rng=np.random.default_rng(seed))
    np.testing.assert_array_equal(w, w_before)  # never mutated
    lsb = 2 if even else 1
    max_int = 2**mantissa_bits - lsb
    m = q.mantissas
    assert m.shape == w.shape and m.dtype == np.int64
    assert np.all(np.abs(m) <= max_int) and np.all(m % lsb == 0)
    # smallest covering exponent
    max_abs = float(np.max(np.abs(w)))
    assert max_abs <= max_int * 2.0**q.exponent
    assert q.exponent == -40 or max_abs > max_int * 2.0 ** (q.exponent - 1)
    err = np.abs(fp.dequantize(m, q.exponent) - w)
    step = lsb * q.scale
    if stochastic:
        assert np.all(err < step)  # one of the two neighbours
    else:
        assert np.all(err <= step / 2)  # half an LSB
        # monotone: sorting the input sorts the output
        flat = np.sort(w.ravel())
        qs = fp.quantize_weights(flat, mantissa_bits, (-40, 20), even=even).mantissas
        assert np.all(np.diff(qs) >= 0)


def test_stochastic_rounding_is_unbiased_and_reproducible():
    w = np.array([0.3, -0.7, 0.011, -0.0049, 0.99])
    n = 40000
    tiled = np.tile(w, (n, 1))
    q = fp.quantize_weights(tiled, 8, (-8, 7), even=True, rounding="stochastic", rng=np.random.default_rng(3))
    step = 2 * q.scale  # 2**-7
    vals = fp.dequantize(q.mantissas, q.exponent)
    # each draw is within one LSB, so its std is <= step/2; 5 standard errors of the mean:
    tol = 5 * (step / 2) / np.sqrt(n)  # ~1.0e-4
    np.testing.assert_allclose(vals.mean(axis=0), w, rtol=0, atol=tol)
    # nearest rounding is biased on the same values (e.g. 0.3 -> 0.3008), stochastic is not
    nearest = fp.dequantize(fp.quantize_weights(w, 8, (-8, 7), even=True).mantissas, q.exponent)
    assert abs(nearest[0] - w[0]) > tol
    again = fp.quantize_weights(tiled, 8, (-8, 7), even=True, rounding="stochastic", rng=np.random.default_rng(3))
    np.testing.assert_array_equal(again.mantissas, q.mantissas)


# ---------------------------------------------------------------------------- njit use


@njit
def _kernel(s, a, decay, x):
    out = np.empty((7, s.size), dtype=np.int64)
    for i in range(s.size):  # scalar calls, as a per-neuron loop would make them
        out[0, i] = fp.leaky_decay_step(s[i], a[i], decay[i], 12)
        out[1, i] = fp.shift_right_round_toward_zero(x[i], 12)
        out[2, i] = fp.shift_right_floor(x[i], 12)
        out[3, i] = fp.shift_right_round_nearest(x[i], 12)
        out[4, i] = fp.saturate(x[i], 24)
        out[5, i] = fp.wrap(x[i], 24)
        out[6, i] = fp.multiplicative_decay(s[i], decay[i], 12)
    return out


@njit
def _kernel_arrays(s, a, decay):
    return fp.saturate(fp.leaky_decay_step(s, a, decay, 12), 24)


def test_helpers_are_callable_from_njit_and_agree_with_python_calls():
    rng = np.random.default_rng(4)
    n = 500
    s = rng.integers(-BITS24 + 1, BITS24, n)
    a = rng.integers(-BITS24 + 1, BITS24, n)
    decay = rng.integers(1, 4097, n)
    x = rng.integers(-(2**26), 2**26, n)
    got = _kernel(s, a, decay, x)
    want = np.stack(
        [
            fp.leaky_decay_step(s, a, decay, 12),
            fp.shift_right_round_toward_zero(x, 12),
            fp.shift_right_floor(x, 12),
            fp.shift_right_round_nearest(x, 12),
            fp.saturate(x, 24),
            fp.wrap(x, 24),
            fp.multiplicative_decay(s, decay, 12),
        ]
    )
    np.testing.assert_array_equal(got, want)
    assert got[1][x < 0].tolist() != got[2][x < 0].tolist()  # toward zero != floor inside njit too
    np.testing.assert_array_equal(_kernel_arrays(s, a, decay), fp.leaky_decay_step(s, a, decay, 12))
