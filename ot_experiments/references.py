"""Published numbers (from ../shared/TABLES.md) for the cells a run can be compared with."""

from __future__ import annotations

# T1a (NCF paper, Table 2): forward L2-UVP (%) of NCF on the ncf_benchmark Gaussians.
T1A_NCF_UVP = {2: 0.010, 4: 0.021, 8: 0.086, 16: 0.146, 32: 0.436, 64: 0.858}

# T3 (GradNetOT paper, Table I): MSE to the barycentric projection, source digit (row) →
# target digit (column), mGradNet-M.
T3_GRADNET_MSE = (
    (0.00138, 0.00031, 0.00566, 0.00036, 0.00145),
    (0.00146, 0.00024, 0.00438, 0.00178, 0.00104),
    (0.00123, 0.00038, 0.00146, 0.00055, 0.00055),
    (0.00117, 0.00026, 0.00253, 0.00051, 0.00105),
    (0.00273, 0.00034, 0.00170, 0.00159, 0.00082),
)


def reference_for(method: str, problem: str, preset: str | None, d: int) -> dict:
    """The paper value(s) for this (method, problem, preset, d) cell, or {} when none.

    ``preset`` is the problem's preset, case or task (e.g. ``ncf_benchmark``, ``0to4``).
    """
    if method == "ncf" and problem == "gaussian" and preset == "ncf_benchmark" and d in T1A_NCF_UVP:
        return {"table": "T1a", "uvp_fwd": T1A_NCF_UVP[d]}
    if method == "gradnet" and problem == "mnist_morphing" and preset:
        src, _, tgt = str(preset).partition("to")
        if src.isdigit() and tgt.isdigit() and int(src) < 5 and int(tgt) < 5:
            value = T3_GRADNET_MSE[int(src)][int(tgt)]
            # the paper's protocol is the sample-based one (mse_bary_samples); show it beside both
            return {"table": "T3", "mse_bary": value, "mse_bary_samples": value}
    return {}
