"""The reuse store's split and merge (diffmia/attacks/reuse.py) on hand-made rows, without a model."""

from types import SimpleNamespace

from pydantic import BaseModel

from diffmia.attacks.reuse import ScoredRows, in_order, split


class Params(BaseModel):
    t: int = 100


def entry(index):
    return SimpleNamespace(index=index), index % 2 == 0


def row(index, score):
    return [index, f"img{index}", "calibration", index % 2, score]


def test_split_leaves_only_unscored_entries_and_in_order_restores_the_manifest_order():
    attack = SimpleNamespace(name="naive_loss", params=Params(), seed=0)
    other = SimpleNamespace(name="naive_loss", params=Params(t=200), seed=0)
    entries = [entry(i) for i in (5, 1, 4, 2, 3)]
    columns = ["sample_id", "path", "half", "is_member", "score"]
    known = ScoredRows()
    known.add(attack, columns, [row(4, 0.4), row(1, 0.1)])
    have, todo = split(known, attack, entries)
    assert sorted(have) == [1, 4] and [e.index for e, _ in todo] == [5, 2, 3]
    assert split(known, other, entries)[1] == entries  # other params: nothing known
    assert split(None, attack, entries) == ({}, entries)
    computed = [row(3, 0.3), row(5, 0.5)]  # image 2 dropped by the attack: no row
    assert [r[0] for r in in_order(entries, have, computed)] == [5, 1, 4, 3]
