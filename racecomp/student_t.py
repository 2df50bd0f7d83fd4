"""Student's t distribution (survival function, quantiles) and Holm's adjustment, in numpy alone (numpy has no t
distribution, and scipy is not a dependency). Checked against scipy where scipy is installed (tests)."""
import functools
import math

import numpy as np

# From this many degrees of freedom on, the tail is Fisher's expansion in 1 / df (to second order): the
# incomplete beta loses digits there (1e-9 relative at 1e6, 1e-5 at 1e8), the expansion is within 2e-10 of
# the exact tail for |t| <= 8 and gains digits as df grows, so the switch does not jump (a switch to the
# normal distribution itself jumped by 1.2e-7 relative at 1e7). df = inf is the normal distribution.
ASYMPTOTIC_DF = 1e6


def _beta_fraction(a, b, x):
    """Continued fraction of the regularized incomplete beta function (modified Lentz)."""
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 100_000):
        even = m * (b - m) * x / ((a - 1.0 + 2 * m) * (a + 2 * m))
        odd = -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 1.0 + 2 * m))
        for coefficient in (even, odd):
            d = 1.0 + coefficient * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + coefficient / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            return h
    raise ArithmeticError(f"incomplete beta ({a}, {b}, {x}) did not converge")


def _beta_regularized(a, b, x):
    """I_x(a, b) for a, b > 0 and 0 <= x <= 1."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _beta_fraction(a, b, x) / a
    return 1.0 - front * _beta_fraction(b, a, 1.0 - x) / b


def t_sf(t, df):
    """P(T > t) for Student's t with df > 0 degrees of freedom (fractional allowed; inf = normal)."""
    if math.isnan(t) or math.isnan(df) or df <= 0:
        return float("nan")
    if math.isinf(t):
        return 0.0 if t > 0 else 1.0
    if df >= ASYMPTOTIC_DF:
        normal_tail = 0.5 * math.erfc(t / math.sqrt(2.0))
        if math.isinf(df):
            return normal_tail
        correction = (t ** 3 + t) / (4.0 * df) + (3 * t ** 7 - 7 * t ** 5 - 5 * t ** 3 - 3 * t) / (96.0 * df * df)
        return normal_tail + math.exp(-0.5 * t * t) / math.sqrt(2.0 * math.pi) * correction
    tail = 0.5 * _beta_regularized(df / 2.0, 0.5, df / (df + t * t))
    return tail if t >= 0 else 1.0 - tail


def _t_density(t, df):
    if df >= ASYMPTOTIC_DF:  # lgamma's difference cancels there; Newton needs only an approximate slope
        return math.exp(-0.5 * t * t) / math.sqrt(2.0 * math.pi) * (1.0 + (t ** 4 - 2 * t * t - 1) / (4.0 * df))
    return math.exp(math.lgamma((df + 1.0) / 2.0) - math.lgamma(df / 2.0) - 0.5 * math.log(df * math.pi)
                    - (df + 1.0) / 2.0 * math.log1p(t * t / df))


def _normal_quantile(q):
    """Standard normal quantile: Acklam's rational approximation refined by one Halley step on erfc."""
    a = (-3.969683028665376e01, 2.209460984245205e02, -2.759285104469687e02, 1.383577518672690e02,
         -3.066479806614716e01, 2.506628277459239e00)
    b = (-5.447609879822406e01, 1.615858368580409e02, -1.556989798598866e02, 6.680131188771972e01,
         -1.328068155288572e01)
    c = (-7.784894002430293e-03, -3.223964580411365e-01, -2.400758277161838e00, -2.549732539343734e00,
         4.374664141464968e00, 2.938163982698783e00)
    d = (7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e00, 3.754408661907416e00)
    tail = min(q, 1.0 - q)
    if tail < 0.02425:
        r = math.sqrt(-2.0 * math.log(tail))
        x = (((((c[0] * r + c[1]) * r + c[2]) * r + c[3]) * r + c[4]) * r + c[5]) / \
            ((((d[0] * r + d[1]) * r + d[2]) * r + d[3]) * r + 1.0)
    else:
        r = (tail - 0.5) ** 2
        x = (((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5]) * (tail - 0.5) / \
            (((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1.0)
    error = 0.5 * math.erfc(-x / math.sqrt(2.0)) - tail  # x < 0 here: the lower-tail quantile
    step = error * math.sqrt(2.0 * math.pi) * math.exp(0.5 * x * x)
    x -= step / (1.0 + 0.5 * x * step)
    return -x if q > 0.5 else x


@functools.lru_cache(maxsize=4096)
def t_quantile(q, df):
    """x with P(T <= x) = q for Student's t with df > 0 degrees of freedom (fractional allowed; inf = normal)."""
    if not 0.0 < q < 1.0:
        raise ValueError(f"quantile level must be in (0, 1), got {q}")
    if not df > 0:
        raise ValueError(f"degrees of freedom must be positive, got {df}")
    if q == 0.5:
        return 0.0
    tail = min(q, 1.0 - q)
    z = -_normal_quantile(tail)
    if math.isinf(df):
        x = z
    else:
        if df == 1.0:
            x = math.tan(math.pi * (0.5 - tail))
        elif df == 2.0:
            x = (1.0 - 2.0 * tail) / math.sqrt(2.0 * tail * (1.0 - tail))
        elif df >= 3.0:  # Cornish-Fisher expansion in 1 / df: a start within a few 1e-4 of the root
            x = (z + (z ** 3 + z) / (4 * df) + (5 * z ** 5 + 16 * z ** 3 + 3 * z) / (96 * df ** 2)
                 + (3 * z ** 7 + 19 * z ** 5 + 17 * z ** 3 - 15 * z) / (384 * df ** 3))
        else:
            x = math.nan
        x = _t_root(tail, df, x)
    return x if q > 0.5 else -x


def _t_root(tail, df, start):
    """x > 0 with t_sf(x, df) = tail: Newton from `start`, bisection whenever a step leaves the bracket."""
    low, high = 0.0, math.inf
    x = start if math.isfinite(start) and start > 0 else 1.0
    for _ in range(400):
        excess = t_sf(x, df) - tail
        if excess == 0.0:
            return x
        if excess > 0:
            low = x
        else:
            high = x
        density = _t_density(x, df)
        step = x + excess / density if density > 0 else math.nan  # NaN: bisect (or double) instead
        if low < step < high and abs(step - x) <= 1e-9 * max(1.0, x):
            return step  # Newton converges quadratically: the error left is far below 1e-15
        x = step if low < step < high else (0.5 * (low + high) if math.isfinite(high) else 2.0 * x)
    return x


def two_sided_p(value, variance, df):
    """Two-sided p-value of value / sqrt(variance) against Student's t with df degrees of freedom.

    variance 0 gives the t statistic's limit (0, or 1 when value is 0): a sample with no spread has no t to
    speak of, and racecomp.estimates.p_value gives it the exact sign-test claim instead."""
    if variance == 0.0:
        return 1.0 if value == 0.0 else 0.0
    if not math.isfinite(variance):
        return 1.0
    return min(1.0, 2.0 * t_sf(abs(value) / math.sqrt(variance), df))


def holm(p_values):
    """Holm's step-down adjustment of a family of p-values (same order): control of the family-wise error."""
    p = np.asarray(p_values, dtype=np.float64)
    if p.size == 0:
        return p
    order = np.argsort(p, kind="stable")
    stepped = np.maximum.accumulate((len(p) - np.arange(len(p))) * p[order])
    adjusted = np.empty_like(p)
    adjusted[order] = np.minimum(1.0, stepped)
    return adjusted
