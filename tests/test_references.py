"""Paper reference values attached to results.json cells (docs/results/tables.md)."""

from ot_experiments.references import PAPER, reference_for


def test_reference_cells():
    assert reference_for("ncf", "gaussian", "ncf_benchmark", 8) == {
        "table": "T1a",
        "uvp_fwd": 0.086,
    }
    assert reference_for("ncf", "gaussian", "shift", 8) == {}
    t3 = reference_for("gradnet", "mnist_morphing", "4to0", 2)
    assert t3["table"] == "T3" and t3["mse_bary"] == 0.00273
    assert reference_for("gradnet", "mnist_morphing", "7to0", 2) == {}
    adjoint = reference_for("lagrangian", "gaussian", "scale_shift", 2, {"gradient": "adjoint"})
    assert adjoint == {"table": "T1b", "w2_sq": 18.1147}
    t1c = reference_for("lagrangian", "gaussian", "scale_shift", 50, {"gradient": "backprop"})
    assert t1c == {"table": "T1c", "w2_sq": 26.0273, "baselines.pot_sinkhorn.w2_sq": 51.4754}
    assert reference_for("lagrangian", "gaussian", "shift", 10, {"gradient": "adjoint"}) == {}


def test_reference_table_sizes():
    """Every published cell is in the data table once: T1a 6, T1b 3, T1c 9, T3 25, T5 3."""
    tables = [key[0] for key in PAPER]
    assert {t: tables.count(t) for t in set(tables)} == {
        "T1a": 6,
        "T1b": 3,
        "T1c": 9,
        "T3": 25,
        "T5": 3,
    }
