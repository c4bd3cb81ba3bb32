"""Published numbers (from ../shared/TABLES.md) for the cells a run can be compared with."""

from __future__ import annotations

# T1a (NCF paper, Table 2): forward L2-UVP (%) of NCF on the ncf_benchmark Gaussians.
T1A_NCF_UVP = {2: 0.010, 4: 0.021, 8: 0.086, 16: 0.146, 32: 0.436, 64: 0.858}


def reference_for(method: str, problem: str, preset: str | None, d: int) -> dict:
    """The paper value(s) for this (method, problem, preset, d) cell, or {} when none."""
    if method == "ncf" and problem == "gaussian" and preset == "ncf_benchmark" and d in T1A_NCF_UVP:
        return {"table": "T1a", "uvp_fwd": T1A_NCF_UVP[d]}
    return {}
