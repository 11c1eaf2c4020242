"""Small-cell suppression: an attacker with a linear-programming solver tries to work out every
suppressed count from what is published (the total, the other cells of its row and column, and
the one-dimension tables of the same query) and never can.

The attacker knows each published count and that a hidden one is at least 1 (zeros are published);
for each hidden count it asks the solver for the least and the greatest value consistent with all
of that. Equal bounds would be a recovered count. (Table constraints are totally unimodular, so the
linear bounds are the integer ones.)
"""

from __future__ import annotations

import random
from itertools import product

import numpy as np
import pytest
from scipy.optimize import linprog

from referral_service.domain.statistics import Table, protect_one, protect_two

T = 5


def _bounds_1d(table: Table) -> dict[tuple[str, ...], tuple[float, float]]:
    keys = sorted(table.cells)
    hidden = [k for k in keys if k in table.suppressed]
    if not hidden:
        return {}
    eq_a, eq_b = [], []
    if not table.total_suppressed:
        eq_a.append([1.0] * len(hidden))
        eq_b.append(table.total - sum(table.cells[k] for k in keys if k not in table.suppressed))
    return _solve(hidden, np.array(eq_a) if eq_a else None, np.array(eq_b) if eq_b else None)


def _solve(hidden: list, a_eq: np.ndarray | None, b_eq: np.ndarray | None) -> dict:
    out = {}
    for i, key in enumerate(hidden):
        c = np.zeros(len(hidden))
        c[i] = 1.0
        lo = linprog(c, A_eq=a_eq, b_eq=b_eq, bounds=[(1, None)] * len(hidden), method="highs")
        hi = linprog(-c, A_eq=a_eq, b_eq=b_eq, bounds=[(1, None)] * len(hidden), method="highs")
        assert lo.status == 0, "the true counts are a solution, so the system is feasible"
        upper = float("inf") if hi.status == 3 else -hi.fun  # 3: unbounded
        out[key] = (lo.fun, upper)
    return out


def _attack_2d(table: Table, rows: Table, cols: Table) -> dict:
    """Unknowns: the hidden cells of the 2-D table and the hidden counts of both 1-D tables."""
    unknowns = sorted(table.suppressed) + [("row", k) for k in sorted(rows.suppressed)]
    unknowns += [("col", k) for k in sorted(cols.suppressed)]
    index = {u: i for i, u in enumerate(unknowns)}
    a_eq, b_eq = [], []

    def value(key: tuple, kind: str) -> tuple[float, int | None]:
        if kind == "cell":
            return (0.0, index[key]) if key in table.suppressed else (table.cells[key], None)
        source = rows if kind == "row" else cols
        return (0.0, index[(kind, key)]) if key in source.suppressed else (source.cells[key], None)

    firsts = sorted({k[0] for k in table.cells})
    seconds = sorted({k[1] for k in table.cells})
    for axis, lines, others in ((0, firsts, seconds), (1, seconds, firsts)):
        for line in lines:
            row = np.zeros(len(unknowns))
            rhs = 0.0
            for other in others:
                key = (line, other) if axis == 0 else (other, line)
                known, var = value(key, "cell")
                if var is None:
                    rhs -= known
                else:
                    row[var] += 1
            known, var = value((line,), "row" if axis == 0 else "col")
            if var is None:
                rhs += known
            else:
                row[var] -= 1
            a_eq.append(row)
            b_eq.append(rhs)
    for source, kind in ((rows, "row"), (cols, "col")):  # each 1-D table adds up to its total
        if source.total_suppressed:
            continue
        row = np.zeros(len(unknowns))
        rhs = float(source.total)
        for key in source.cells:
            known, var = value(key, kind)
            if var is None:
                rhs -= known
            else:
                row[var] += 1
        a_eq.append(row)
        b_eq.append(rhs)
    if not unknowns:
        return {}
    return _solve(unknowns, np.array(a_eq), np.array(b_eq))


def _random_2d(rng: random.Random, m: int, n: int) -> dict[tuple[str, ...], int]:
    def draw() -> int:
        r = rng.random()
        return 0 if r < 0.2 else rng.randint(1, 4) if r < 0.55 else rng.randint(5, 40)

    return {(f"r{i}", f"c{j}"): draw() for i, j in product(range(m), range(n))}


def _margins(cells: dict[tuple[str, ...], int], axis: int) -> dict[str, int]:
    out: dict[str, int] = {}
    for key, v in cells.items():
        out[key[axis]] = out.get(key[axis], 0) + v
    return out


def test_a_hidden_count_cannot_be_recovered_from_the_total_and_the_other_cells_of_a_one_dimension_table() -> None:
    # One small district among large ones: total minus the others would give it away.
    table = protect_one("district", {"Peshawar": 40, "Mardan": 3, "Swat": 12, "Kohat": 9}, total=64)
    assert ("Mardan",) in table.suppressed and len(table.suppressed) >= 2
    assert not table.total_suppressed
    for low, high in _bounds_1d(table).values():
        assert low < high


def test_two_ones_hidden_together_are_not_told_apart_from_their_sum() -> None:
    # Hiding 1 and 1 leaves their sum 2: both must be 1. A third cell has to go too.
    table = protect_one("risk_level", {"critical": 1, "high": 1, "medium": 30, "low": 22}, total=54)
    assert len(table.suppressed) >= 3
    for low, high in _bounds_1d(table).values():
        assert low < high


def test_row_and_column_totals_do_not_give_a_hidden_cell_away() -> None:
    cells = {("Peshawar", "high"): 2, ("Peshawar", "low"): 30, ("Mardan", "high"): 17, ("Mardan", "low"): 25}
    rows = protect_one("district", _margins(cells, 0), 74)
    cols = protect_one("risk_level", _margins(cells, 1), 74)
    table = protect_two(("district", "risk_level"), cells, rows, cols, T)
    assert ("Peshawar", "high") in table.suppressed
    assert table.suppressed == set(cells), "a 2x2 table with published totals must hide all four"
    for low, high in _attack_2d(table, rows, cols).values():
        assert low < high


@pytest.mark.parametrize("seed", range(150))
def test_no_hidden_count_of_a_random_table_can_be_worked_out(seed: int) -> None:
    rng = random.Random(seed)
    m, n = rng.randint(1, 6), rng.randint(2, 7)
    cells = _random_2d(rng, m, n)
    total = sum(cells.values())
    rows = protect_one("province", _margins(cells, 0), total)
    cols = protect_one("month", _margins(cells, 1), total)
    for one in (rows, cols):
        for low, high in _bounds_1d(one).values():
            assert low < high
    table = protect_two(("province", "month"), cells, rows, cols, T)
    assert {k for k, v in cells.items() if 0 < v < T} <= table.suppressed
    if table.refused:  # nothing published but the 1-D tables, which held up above
        assert table.suppressed == set(cells)
        return
    assert all(cells[k] > 0 for k in table.suppressed), "zeros are published, never hidden"
    recovered = {k: b for k, b in _attack_2d(table, rows, cols).items() if b[0] == b[1]}
    assert recovered == {}


def test_a_need_counted_twice_does_not_make_the_totals_constraints() -> None:
    # A referral with two needs is in two cells: the need table adds up to more than the total.
    table = protect_one("need", {"medical": 3, "legal_aid": 20, "shelter": 9}, total=25)
    assert table.suppressed == {("medical",)} and not table.total_suppressed
