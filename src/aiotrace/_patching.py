"""Reversible attribute patches; knows nothing about asyncio.

A :class:`Patch` remembers exactly what the owner's ``__dict__`` held, so that
reverting restores ``vars(owner)`` to what it was: an inherited method is put
back by deleting our copy (``setattr`` of the inherited function would leave a
new entry on the subclass). :class:`PatchSet` applies a list of patches all or
nothing, and reverts them in reverse order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from collections.abc import Iterable

MISSING: Final = object()
"""Marks an attribute that the owner did not define itself."""


@dataclass
class Patch:
    """Replace ``owner.name`` with ``value`` and put back exactly what was there."""

    owner: object
    name: str
    value: object
    original: object = field(default=MISSING, init=False)
    applied: bool = field(default=False, init=False)

    def apply(self) -> None:
        """Install ``value``, remembering the owner's own attribute (or its absence)."""
        if self.applied:
            return
        self.original = vars(self.owner).get(self.name, MISSING)
        setattr(self.owner, self.name, self.value)
        self.applied = True

    def revert(self) -> None:
        """Restore the owner's own attribute, or delete ours if it had none."""
        if not self.applied:
            return
        if self.original is MISSING:
            delattr(self.owner, self.name)
        else:
            setattr(self.owner, self.name, self.original)
        self.applied = False


class PatchSet:
    """An ordered group of patches that is applied and reverted as a unit."""

    def __init__(self, patches: Iterable[Patch] = ()) -> None:
        self._patches: list[Patch] = list(patches)

    def add(self, patch: Patch) -> None:
        """Append a patch to apply after the ones already listed."""
        self._patches.append(patch)

    def extend(self, patches: Iterable[Patch]) -> None:
        """Append several patches in order."""
        self._patches.extend(patches)

    @property
    def patches(self) -> list[Patch]:
        """The patches, in application order."""
        return list(self._patches)

    def apply(self) -> None:
        """Apply every patch; if one fails, revert those already applied and re-raise.

        Raises:
            Exception: whatever the failing ``setattr`` raised, after rollback.
        """
        done: list[Patch] = []
        try:
            for patch in self._patches:
                patch.apply()
                done.append(patch)
        except BaseException:
            for patch in reversed(done):
                patch.revert()
            raise

    def revert(self) -> None:
        """Revert every applied patch in reverse order of application."""
        errors: list[BaseException] = []
        for patch in reversed(self._patches):
            try:
                patch.revert()
            except Exception as exc:  # keep reverting the others
                errors.append(exc)
        if errors:
            raise errors[0]
