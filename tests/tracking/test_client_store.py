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
