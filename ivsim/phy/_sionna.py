"""The one door to Sionna: a side-effect-free import and caller-owned randomness.

Sionna PHY keeps its random state in the ``sionna.phy.config`` singleton: every
random draw of a Sionna block goes through ``config.torch_rng(device)``, one
``torch.Generator`` per device. Importing ``sionna.phy`` also re-seeds torch's
*global* default generator(s) at random (``Config.__init__`` sets ``seed=None``).
ivsim wants neither (architecture rule 2), so:

* :data:`sp` is imported inside :func:`torch.random.fork_rng`: the import leaves
  the global torch RNG state as it found it (when ivsim.phy is the first to
  import Sionna).
* :func:`sionna_rng` lends a caller's ``torch.Generator`` to Sionna for the
  duration of a ``with`` block: Sionna's generator takes the caller's state on
  entry, the caller's generator takes the advanced state on exit, and Sionna's
  own state is restored. Sionna's draws are therefore a deterministic function of
  the caller's generator, the caller's generator advances as if it had been used
  directly, and no state outside the block changes. The config setters
  (``config.seed = ...``) are never called and ``torch.manual_seed`` never is.

The swap is serialised by a process-wide lock, so threads sampling concurrently
cannot see each other's state (they queue instead). Code run under
``torch.compile`` would bypass the swap (Sionna then draws from the global RNG);
ivsim does not compile Sionna blocks.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import torch

with torch.random.fork_rng(devices=list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []):
    import sionna.phy as sp
    from sionna.phy.config import config as _config

__all__ = ["device_key", "sionna_rng", "sp"]

_LOCK = threading.RLock()


def device_key(device: str | torch.device) -> str:
    """Return Sionna's name of a device: ``"cpu"`` or ``"cuda:<index>"``.

    Parameters
    ----------
    device
        A torch device or its name (``"cpu"``, ``"cuda"``, ``"cuda:1"``).

    Returns
    -------
    str
        The key Sionna uses for the device's generator and for its blocks.
    """
    dev = torch.device(device)
    if dev.type == "cuda":
        index = dev.index if dev.index is not None else torch.cuda.current_device()
        return f"cuda:{index}"
    return dev.type


@contextmanager
def sionna_rng(generator: torch.Generator) -> Iterator[None]:
    """Make Sionna draw from ``generator`` inside a ``with`` block.

    Parameters
    ----------
    generator
        The caller's generator; its device must be the device of the Sionna
        blocks called inside the block. It is advanced by every draw Sionna
        makes, exactly as if Sionna had been handed it.

    Yields
    ------
    None
        While the block runs, Sionna's generator for that device holds the
        caller's state; on exit (also on an exception) Sionna's previous state is
        restored.

    Examples
    --------
    >>> import torch
    >>> g = torch.Generator().manual_seed(1)
    >>> with sionna_rng(g):
    ...     pass  # call Sionna blocks here
    """
    key = device_key(generator.device)
    with _LOCK:
        sionna_gen = _config.torch_rng(key)
        saved = sionna_gen.get_state()
        sionna_gen.set_state(generator.get_state())
        try:
            yield
        finally:
            generator.set_state(sionna_gen.get_state())
            sionna_gen.set_state(saved)
