"""TIPC's wire format: the only place in tipcshm that knows TIPC's numbers and bits.

One module per message user, each frozen dataclasses plus encode/decode:

* :mod:`tipcshm.wire.header` -- the generic header every message starts with, the
  constants and enums of msg.h, hot-path word helpers, node identities, 16-bit sequence
  arithmetic and name-distributor items.

Everything :mod:`tipcshm.wire.header` exports is re-exported here, so ``from tipcshm import
wire; wire.User.LINK_PROTOCOL`` keeps working; the per-user codecs are imported by module
(``from tipcshm.wire import link``).
"""

from tipcshm.wire.header import *  # noqa: F403
from tipcshm.wire.header import __all__ as _header_all

__all__ = list(_header_all)
