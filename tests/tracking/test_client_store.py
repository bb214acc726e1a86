"""Per-hospital state by hospital id and round: what a resume reads is what existed at the checkpoint."""

from __future__ import annotations

from fedray.tracking.client_store import ClientStateStore


def test_get_returns_the_latest_state_before_a_round(tmp_path):
    store = ClientStateStore(tmp_path)
    assert store.get("a", 1) is None
    store.put("a", 1, b"r1")
    store.put("a", 3, b"r3")
    assert store.get("a", 1) is None and store.get("a", 2) == b"r1" and store.get("a", 4) == b"r3"


def test_prune_keeps_what_the_checkpoint_needs_and_rollback_forgets_later_rounds(tmp_path):
    store = ClientStateStore(tmp_path)
    for r in (1, 2, 3, 4):
        store.put("a", r, f"r{r}".encode())
    store.put("b", 1, b"b1")
    store.prune(3)  # checkpoint at round 3: rounds 1-2 of "a" are no longer needed
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["000003.npz", "000004.npz"]
    assert store.get("b", 9) == b"b1"  # b's only state is still its latest
    store.rollback(3)  # resume from round 3: round 4 is recomputed
    assert store.get("a", 9) == b"r3"


def test_any_hospital_id_is_a_safe_folder(tmp_path):
    store = ClientStateStore(tmp_path / "states")
    for odd in ("St. Mary's/ICU", "..", "."):
        store.put(odd, 1, odd.encode())
        assert store.get(odd, 2) == odd.encode()
    assert sorted(store.hospitals()) == sorted(["St. Mary's/ICU", "..", "."])
    assert all(p.parent == tmp_path / "states" for p in (tmp_path / "states").iterdir())


def test_prune_keeps_the_best_rounds_states_and_records_which_rounds_are_complete(tmp_path):
    store = ClientStateStore(tmp_path)
    for r in (1, 2, 3, 4, 5):
        store.put("a", r, f"a{r}".encode())
    store.put("b", 1, b"b1")
    store.put("b", 4, b"b4")
    assert store.complete_at(2) is None  # never pruned: no record
    store.prune(5, keep=(2,))  # checkpoint at round 5, best round 2
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["000002.npz", "000005.npz"]
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == ["000001.npz", "000004.npz"]  # b's latest up to 2 is 1
    assert store.get("a", 3) == b"a2" and store.get("b", 3) == b"b1"  # what round 2's model read
    assert [store.complete_at(r) for r in (1, 2, 3, 4, 5, 6)] == [False, True, False, False, True, True]
    store.rollback(1)  # a resume from round 1 forgets the best round's states too, until rounds are redone
    assert [store.complete_at(r) for r in (1, 2, 5)] == [True, False, False]
