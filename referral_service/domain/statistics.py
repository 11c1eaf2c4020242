"""Aggregate statistics with small-cell suppression: what may leave the network, as pure functions.

A count under the threshold (1 to T-1) is suppressed ("primary"); zeros are shown. Then enough other
cells are suppressed ("complementary") that no suppressed count can be worked out from what is
published: the total, the other cells of its row and column, and the one-dimension tables of the same
query (which are protected on their own, exactly as `by=DIM` answers them).

Whether a suppressed count can be worked out is decided exactly, not by a rule of thumb. A table
with its margins is a circulation: in a two-dimension table each cell is an edge row→column, each row
total an edge from a node C* to its row, each column total an edge from its column to a node R*,
and the grand total an edge R*→C*; flow is conserved at every node because every line adds up. What
is published fixes an edge; a suppressed edge is only known to be at least 1 (zeros are published, so a
hidden count is never 0). A suppressed count can take another value, with everything published
unchanged, exactly when it lies on a cycle of the residual graph of the true counts: one more needs a
path back from its head to its tail through suppressed edges (any may grow); one fewer needs it to
be above 1 and a path from its tail to its head through suppressed edges that can shrink (above 1)
or grow backwards. Constraint matrices of such tables are totally unimodular, so this is the same
answer an integer programme would give. `protect` adds the smallest complementary cells until
no suppressed count is determined (`determined` is empty).

A dimension whose cells overlap (`need`: a referral with two needs counts under both) does not add
up to its own total or to the other dimension's totals; those lines are simply not constraints.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

DIMENSIONS = ("province", "district", "need", "risk_level", "sex", "age_band", "month", "status")
OVERLAPPING = frozenset({"need"})  # a referral may count in several cells of this dimension
DEFAULT_THRESHOLD = 5
LOWER = 1  # a suppressed count is at least this: zeros are published

Node = Hashable


@dataclass
class Edge:
    tail: Node
    head: Node
    value: int
    suppressed: bool
    key: Hashable  # what the edge is: a cell's values, ("total",), ("margin", axis, value)
    free: bool = False  # not a constraint (overlapping cells do not add up to it): any value at all


@dataclass
class Table:
    """One query's answer: cells keyed by their values, the total, what is suppressed."""

    by: tuple[str, ...]
    cells: dict[tuple[str, ...], int]
    total: int
    suppressed: set[tuple[str, ...]] = field(default_factory=set)
    total_suppressed: bool = False
    refused: bool = False  # no suppression pattern protects it: every cell is hidden, zeros too


def _primary(count: int, threshold: int) -> bool:
    return 0 < count < threshold


def _residual(edges: Sequence[Edge], skip: int) -> dict[Node, list[Node]]:
    graph: dict[Node, list[Node]] = {}
    for i, e in enumerate(edges):
        if not (e.suppressed or e.free) or i == skip:
            continue
        graph.setdefault(e.tail, []).append(e.head)  # it may grow
        if e.value > LOWER or e.free:
            graph.setdefault(e.head, []).append(e.tail)  # it may shrink
    return graph


def _reaches(graph: Mapping[Node, list[Node]], start: Node, goal: Node) -> bool:
    seen, todo = {start}, deque([start])
    while todo:
        node = todo.popleft()
        if node == goal:
            return True
        for nxt in graph.get(node, ()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return False


def is_determined(edges: Sequence[Edge], index: int) -> bool:
    e = edges[index]
    graph = _residual(edges, index)
    if _reaches(graph, e.head, e.tail):  # one more on this edge, one more round the cycle
        return False
    return not (e.value > LOWER and _reaches(graph, e.tail, e.head))


def determined(edges: Sequence[Edge]) -> list[int]:
    """The suppressed edges whose count follows from what is published."""
    return [i for i, e in enumerate(edges) if e.suppressed and not e.free and is_determined(edges, i)]


# -- building the circulation of a query -------------------------------------------------------------------
ROW, COL, RSTAR, CSTAR = "row", "col", ("R*",), ("C*",)


def one_dimension_edges(table: Table) -> list[Edge]:
    """Cells A→B, and the total B→A when the cells add up to it."""
    edges = [Edge("A", "B", n, key in table.suppressed, key) for key, n in sorted(table.cells.items())]
    free = table.by[0] in OVERLAPPING  # the needs of a referral: their counts add up to more than the total
    edges.append(Edge("B", "A", table.total, table.total_suppressed, ("total",), free=free))
    return edges


def two_dimension_edges(table: Table, rows: Table, cols: Table) -> list[Edge]:
    """The extended table: cells, the row and column totals (as the one-dimension tables publish
    them) and the grand total, each line a node (see the module's notes)."""
    first, second = table.by
    edges = [
        Edge((ROW, key[0]), (COL, key[1]), n, key in table.suppressed, key) for key, n in sorted(table.cells.items())
    ]
    # Rows add up to the first dimension's table unless the second overlaps (a need counted twice).
    # A row adds up to the first dimension's published count, unless the second dimension overlaps
    # (a referral with two needs is in two cells of its row); likewise for the columns.
    row_free, col_free = second in OVERLAPPING, first in OVERLAPPING
    for (value,), n in sorted(rows.cells.items()):
        hidden = (value,) in rows.suppressed
        edges.append(Edge(CSTAR, (ROW, value), n, hidden, ("margin", 0, value), free=row_free))
    for (value,), n in sorted(cols.cells.items()):
        hidden = (value,) in cols.suppressed
        edges.append(Edge((COL, value), RSTAR, n, hidden, ("margin", 1, value), free=col_free))
    grand = sum(table.cells.values())
    hidden = rows.total_suppressed and cols.total_suppressed
    edges.append(Edge(RSTAR, CSTAR, grand, hidden, ("total",), free=bool(OVERLAPPING & set(table.by))))
    return edges


# -- protecting ------------------------------------------------------------------------------------------
def _try_groups(edges: list[Edge], target: int, groups: Iterable[tuple[int, ...]]) -> bool:
    """Hide the first group (cheapest first) that frees `target`."""
    for group in sorted(groups, key=lambda g: (sum(edges[i].value for i in g), len(g))):
        for i in group:
            edges[i].suppressed = True
        if not is_determined(edges, target):
            return True
        for i in group:
            edges[i].suppressed = False
    return False


def _rectangles(edges: list[Edge], target: int, cells: set[int], usable: set[int]) -> list[tuple[int, ...]]:
    """For a cell of a two-dimension table: the other three corners of each rectangle through it,
    less those hidden already (each must be a usable cell)."""
    e = edges[target]
    at = {(edges[i].tail, edges[i].head): i for i in cells}
    rows = {edges[i].tail for i in cells} - {e.tail}
    cols = {edges[i].head for i in cells} - {e.head}
    out = []
    for r in rows:
        for c in cols:
            corners = [at.get((e.tail, c)), at.get((r, e.head)), at.get((r, c))]
            if any(i is None for i in corners):
                continue
            new = tuple(i for i in corners if i is not None and not edges[i].suppressed)
            if new and all(i in usable for i in new):
                out.append(new)
    return out


def _hide_then_prune(edges: list[Edge], target: int, usable: set[int]) -> bool:
    """Hide every usable cell; if that frees `target` (hiding more never determines anything), publish
    them again one by one, largest first, while it stays free. False: nothing can free it."""
    for i in usable:
        edges[i].suppressed = True
    if is_determined(edges, target):
        for i in usable:
            edges[i].suppressed = False
        return False
    for i in sorted(usable, key=lambda i: -edges[i].value):
        edges[i].suppressed = False
        if is_determined(edges, target):
            edges[i].suppressed = True
    return True


def _settle(edges: list[Edge], cells: set[int], primary: set[int], near: Callable[[int, list[int]], list[int]]) -> bool:
    """Hide cells until no small count (and no hidden count of a one-dimension table) is determined:
    the cheapest cell that frees it, else the cheapest rectangle of cells through it, else as few
    as it takes of all the others (`_hide_then_prune`). Then the complementary cells that are
    determined anyway are published again: they tell nothing that is not known already, and
    publishing them changes nothing else.
    False when some small count stays determined."""
    while stuck := [i for i in determined(edges) if i in primary or i not in cells]:
        target = stuck[0]
        usable = {i for i in cells if not edges[i].suppressed and edges[i].value >= LOWER}
        close = near(target, sorted(usable))
        if _try_groups(edges, target, ((i,) for i in close)):
            continue
        if target in cells and _try_groups(edges, target, _rectangles(edges, target, cells, usable)):
            continue
        if not _hide_then_prune(edges, target, usable):
            return False
    for i in determined(edges):
        if i in cells and i not in primary:
            edges[i].suppressed = False
    return True


def protect_one(by: str, counts: Mapping[str, int], total: int, threshold: int = DEFAULT_THRESHOLD) -> Table:
    """A one-dimension table: the counts under the threshold, and enough others that the total does
    not give them away; the total itself only when nothing else will do (or it is small itself)."""
    table = Table((by,), {(k,): n for k, n in counts.items()}, total)
    table.suppressed = {k for k, n in table.cells.items() if _primary(n, threshold)}
    table.total_suppressed = _primary(total, threshold)
    edges = one_dimension_edges(table)
    cells = set(range(len(table.cells)))  # the cells come first, then the total
    primary = {i for i in cells if edges[i].suppressed}
    if not _settle(edges, cells, primary, lambda _t, open_cells: open_cells):
        edges[-1].suppressed = True  # only the total is left to hide
        _settle(edges, cells, primary, lambda _t, open_cells: open_cells)
    table.suppressed = {edges[i].key for i in cells if edges[i].suppressed}  # type: ignore[misc]
    table.total_suppressed = edges[-1].suppressed
    return table


def protect_two(
    by: tuple[str, str], counts: Mapping[tuple[str, ...], int], rows: Table, cols: Table, threshold: int
) -> Table:
    """A two-dimension table against its published one-dimension tables (`rows`, `cols`): they are
    published as they are, so only cells of this table may be hidden here (and must be, enough that
    neither this table's hidden cells nor theirs can be worked out). If that cannot be done, every
    cell is hidden."""
    table = Table(by, dict(counts), sum(counts.values()))
    table.suppressed = {k for k, n in table.cells.items() if _primary(n, threshold)}
    table.total_suppressed = rows.total_suppressed and cols.total_suppressed
    edges = two_dimension_edges(table, rows, cols)
    cells = set(range(len(table.cells)))  # the cells come first
    primary = {i for i in cells if edges[i].suppressed}

    def near(target: int, open_cells: list[int]) -> list[int]:
        e = edges[target]
        if isinstance(e.key, tuple) and e.key[0] == "margin":  # a hidden total of a line: hide in that line
            node = e.head if e.key[1] == 0 else e.tail
            return [i for i in open_cells if node in (edges[i].tail, edges[i].head)]
        return [i for i in open_cells if {edges[i].tail, edges[i].head} & {e.tail, e.head}]

    if not _settle(edges, cells, primary, near):
        # No pattern of hidden cells protects it: nothing of the table is published but its total.
        table.suppressed = set(table.cells)
        table.refused = True
        return table
    table.suppressed = {edges[i].key for i in cells if edges[i].suppressed}  # type: ignore[misc]
    return table
