"""Index checks on the device: the ``bounds_check="deferred"`` mode of lookups, bags and layers (issue 12).

Every embedlib operation checks its indices before anything reads the table. By default
(``bounds_check="immediate"``) the check reads the smallest and the largest index back to the host
and raises ``IndexError`` at once: on a GPU that is a synchronisation in every call, which stalls
the pipeline, ends a ``torch.compile`` graph and forbids CUDA graph capture.

``bounds_check="deferred"`` checks on the device instead, as a few element-wise operations fused into
the call, and never waits for the device:

* a bad index never reaches memory: it is replaced by a row that the same call reads anyway, its
  output row is zero (a bag leaves it out, as a padding entry) and it sends no gradient, so no row
  of the table changes because of it (``max_norm`` included);
* the first bad value, the table's ``num_embeddings`` and how many there were are written into a
  small int64 tensor on the device, a :class:`BoundsRecord`; bags record bad ``offsets`` there too;
* the ``IndexError`` (or ``ValueError`` for offsets), with the same words as the immediate check's,
  is raised by the next call that uses the same record, as soon as the device has finished the
  call that recorded it (the record's copy to the host is asynchronous; nothing waits for it), or
  at once by :meth:`BoundsRecord.check`, which waits. Raising clears the record, and the call that
  raises does nothing else, so the process stays usable.

Layers keep their own record (``layer.check_bounds()``); the functions share one per device
(:func:`check_bounds`) unless given their own (``bounds_check=BoundsRecord(device)``). Inside
``torch.compile`` and CUDA graphs the record is updated but only read outside them, by an explicit
check or by an uncompiled call.

FBGEMM's ``BoundsCheckMode`` (``bounds_check_indices``) is the model: ``FATAL`` is a check that on
CUDA is a device-side assert (which kills the CUDA context: we refuse that); ``WARNING`` sets a bad
index to 0 in the caller's own index tensor, counts it and logs the first one (the output then
silently holds row 0's values, and the exception never comes); ``IGNORE`` does the same without a
word; bad offsets are clamped in place alike. Here the caller's tensors are left as they were, a
bad entry reads as a zero row (a bag leaves it out), and the error, naming the value, comes back to
the Python code that made it, at the next call.
"""
from __future__ import annotations

import torch

from embedlib import _checks

MODES = ("immediate", "deferred")

# The record's fields: out-of-range indices (count, first value, its num_embeddings), then bad offsets
# (count of calls, then what _checks.bag_offsets needs to name the first problem).
_FIELDS = ("bad_indices", "index", "num_embeddings", "bad_offsets", "offsets_first", "decrease_at",
           "before_decrease", "at_decrease", "offsets_last", "num_indices", "num_offsets", "include_last_offset")
_SIZE = len(_FIELDS)


def mode(bounds_check, record_allowed: bool = True) -> str:
    """``"immediate"`` or ``"deferred"``, else ValueError; a :class:`BoundsRecord` (where the functions
    take one) means "deferred", into that record."""
    if record_allowed and isinstance(bounds_check, BoundsRecord):
        return "deferred"
    if isinstance(bounds_check, BoundsRecord) or bounds_check not in MODES:
        also = " or a BoundsRecord" if record_allowed else " (a layer keeps its own record)"
        raise ValueError(f"bounds_check must be one of {MODES}{also}, got {bounds_check!r}")
    return bounds_check


def empty_state(device=None) -> torch.Tensor:
    return torch.zeros(_SIZE, dtype=torch.int64, device=device)


class BoundsRecord:
    """What the deferred checks found, on the device (``state``, int64), and the asynchronous copy of
    it that lets a later call see the error without waiting for the device."""

    def __init__(self, device=None, state: torch.Tensor | None = None):
        self.state = empty_state(device) if state is None else state
        self._host = self._event = None

    def use(self, state: torch.Tensor) -> BoundsRecord:
        """Record into ``state`` from now on (a layer's buffer, after ``.to(device)`` replaced it)."""
        if state is not self.state:
            self.state, self._host, self._event = state, None, None
        return self

    # ---- on the device, inside the operation ---------------------------------------------------
    def indices(self, flat: torch.Tensor, num_embeddings: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(safe, bad)`` for the flat indices: ``bad`` marks the out-of-range ones, recorded here;
        ``safe`` replaces each by the first in-range index of the call (0 if there is none), so it
        reads a row the call reads anyway. No host sync; a fixed number of operations."""
        bad = (flat < 0) | (flat >= num_embeddings)
        if flat.numel() == 0:
            return flat, bad
        good_first = _at(flat, torch.argmax((~bad).to(torch.uint8)))  # the first in-range index, if any
        fill = torch.where(bad.all(), torch.zeros_like(good_first), good_first)
        first_bad = _at(flat, torch.argmax(bad.to(torch.uint8))).long()
        seen = self.state[0] > 0
        update = torch.stack([
            self.state[0] + bad.sum(),
            torch.where(seen, self.state[1], first_bad),
            torch.where(seen, self.state[2], torch.full_like(self.state[2], num_embeddings)),
        ])
        self.state[:3].copy_(update)
        return torch.where(bad, fill, flat), bad

    def offsets(self, off: torch.Tensor, num_indices: int, include_last_offset: bool) -> None:
        """Record offsets that do not start at 0, decrease, run past the indices, or (with
        ``include_last_offset``) do not end at the last index. ``off`` is int64 and not empty."""
        first, last = off[0], off[-1]
        if off.numel() > 1:
            down = off[1:] < off[:-1]
            at = torch.argmax(down.to(torch.uint8)) + 1
            has_down, before, after = down.any(), _at(off, at - 1), _at(off, at)
        else:
            has_down = torch.zeros((), dtype=torch.bool, device=off.device)
            at = before = after = torch.zeros((), dtype=torch.int64, device=off.device)
        wrong = (first != 0) | has_down | (last > num_indices)
        if include_last_offset:
            wrong = wrong | (last != num_indices)
        seen = self.state[3] > 0
        found = torch.stack([first, torch.where(has_down, at, -1), before, after, last,
                             torch.full_like(first, num_indices), torch.full_like(first, off.numel()),
                             torch.full_like(first, int(include_last_offset))])
        keep_old = seen | ~wrong
        self.state[3:].copy_(torch.cat([(self.state[3] + wrong.long())[None],
                                        torch.where(keep_old, self.state[4:], found)]))

    # ---- on the host, between calls -------------------------------------------------------------
    def after_call(self) -> None:
        """Start the asynchronous copy to the host that :meth:`poll` reads (CUDA only; outside
        torch.compile). On the CPU the record itself is read."""
        if self.state.device.type != "cuda" or torch.compiler.is_compiling() or _capturing():
            return
        if self._host is None:
            self._host = torch.zeros(_SIZE, dtype=torch.int64, pin_memory=True)
            self._event = torch.cuda.Event()
        self._host.copy_(self.state, non_blocking=True)
        self._event.record()

    def poll(self) -> None:
        """Raise what an earlier call recorded, if the device has finished it; never waits."""
        if torch.compiler.is_compiling() or _capturing():
            return
        if self.state.device.type == "cuda":
            if self._event is None or not self._event.query():
                return
            values = self._host.tolist()
        elif self.state.device.type == "cpu":
            values = self.state.tolist()
        else:  # another device: no way to read without waiting
            return
        if values[0] or values[3]:
            self._raise(values)

    def check(self) -> None:
        """Wait for the device, then raise what any earlier call recorded (and clear it)."""
        values = self.state.tolist()
        if values[0] or values[3]:
            self._raise(values)

    def clear(self) -> None:
        self.state.zero_()
        if self._host is not None:
            self._host.zero_()

    def _raise(self, values: list[int]) -> None:
        f = dict(zip(_FIELDS, values))
        self.clear()
        if f["bad_indices"]:
            error = _checks.out_of_range(f["index"], f["num_embeddings"])
            more = f["bad_indices"] - 1
            error.args = (f"{error.args[0]} (found by the deferred bounds check of an earlier call"
                          + (f", with {more} more out-of-range {'index' if more == 1 else 'indices'}" if more else "")
                          + "; an out-of-range index reads no row and sends no gradient)",)
            raise error
        decrease = None
        if f["decrease_at"] >= 0:
            decrease = (f["decrease_at"], f["before_decrease"], f["at_decrease"])
        try:
            _checks.bag_offsets(f["num_offsets"], f["offsets_first"], decrease, f["offsets_last"], f["num_indices"],
                                bool(f["include_last_offset"]))
        except ValueError as error:
            error.args = (f"{error.args[0]} (found by the deferred bounds check of an earlier call; entries "
                          "outside the bags that these offsets describe were left out)",)
            raise
        raise AssertionError(f"a bad offsets record that names no problem: {f}")  # pragma: no cover


def _capturing() -> bool:
    """Inside CUDA graph capture: neither copy to the host nor ask whether the device is done (the
    graph's replays update the record; :meth:`BoundsRecord.check` reads it)."""
    return torch.cuda.is_available() and torch.cuda.is_current_stream_capturing()


def _at(t: torch.Tensor, i: torch.Tensor) -> torch.Tensor:
    """``t[i]`` for a 0-d index tensor, without reading ``i`` on the host (torch.compile keeps it)."""
    return t.index_select(0, i.reshape(1)).squeeze(0)


_DEFAULT: dict[torch.device, BoundsRecord] = {}


def default_record(device) -> BoundsRecord:
    """The record that the functions (``lookup``, ``embedding_bag``) share on ``device``."""
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    if device not in _DEFAULT:
        _DEFAULT[device] = BoundsRecord(device)
    return _DEFAULT[device]


def record_for(bounds_check, device) -> BoundsRecord:
    return bounds_check if isinstance(bounds_check, BoundsRecord) else default_record(device)


def check_bounds(device=None) -> None:
    """Raise what the functions' deferred checks recorded on ``device`` (every device when None),
    waiting for the device first."""
    records = list(_DEFAULT.values()) if device is None else [default_record(device)]
    for record in records:
        record.check()
