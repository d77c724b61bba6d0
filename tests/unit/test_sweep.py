"""The order of visits under --repeats: rounds, each a seeded shuffle of every cell."""
from __future__ import annotations

from bench.plan import make_cells
from bench.sweep import Visit, visit_identity, visit_order

CELLS = make_cells(["pvt_small", "vit_s", "resnet50"], [(224, 224), (512, 512)], ["infer", "train"], [1])


def test_one_round_keeps_the_model_major_order():
    assert visit_order(CELLS, 1, 0) == [Visit(c, 0) for c in CELLS]


def test_rounds_visit_every_cell_once_in_seeded_shuffled_orders():
    visits = visit_order(CELLS, 4, 3)
    n = len(CELLS)
    rounds = [visits[i * n:(i + 1) * n] for i in range(4)]
    orders = []
    for r, round_visits in enumerate(rounds):
        assert {v.repeat for v in round_visits} == {r}
        assert sorted(v.cell.key for v in round_visits) == sorted(c.key for c in CELLS)
        orders.append([v.cell.key for v in round_visits])
    assert len({tuple(o) for o in orders}) == 4  # each round its own order
    assert orders[0] != [c.key for c in CELLS]  # not the model-major order
    assert visit_order(CELLS, 4, 3) == visits and visit_order(CELLS, 4, 4) != visits  # the seed decides


def test_visit_identity_reads_old_records_as_repeat_zero():
    assert visit_identity({"cell_key": "k", "config_id": "c"}) == ("k", "c", 0)
    assert visit_identity({"cell_key": "k", "config_id": "c", "repeat": 2}) == ("k", "c", 2)
    assert visit_identity({"cell_key": "k", "config_id": "c", "repeat": True}) is None
