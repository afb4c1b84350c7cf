"""Full garbage collections kept short while a page is grabbed (no server)."""

from __future__ import annotations

import gc

from pyegress.sources import collector


def test_captures_freeze_the_objects_there_are_until_the_last_one_ends() -> None:
    """Objects made before a capture are left out of full collections while any capture runs
    (two at once: the first to end must not unfreeze the other's), and collected again after."""
    assert gc.get_freeze_count() == 0, "a capture still holds the collector (a page not closed)"
    collector.hold()
    frozen = gc.get_freeze_count()
    assert frozen > 0
    collector.hold()  # a second capture: nothing more to freeze, nothing unfrozen
    assert gc.get_freeze_count() == frozen
    collector.release()
    assert gc.get_freeze_count() == frozen
    collector.release()
    assert gc.get_freeze_count() == 0


def test_a_process_that_froze_objects_of_its_own_is_left_as_it_is() -> None:
    gc.freeze()
    try:
        frozen = gc.get_freeze_count()
        collector.hold()
        collector.release()
        assert gc.get_freeze_count() == frozen
    finally:
        gc.unfreeze()
