"""TIPC's wire format: the only place in tipcshm that knows TIPC's numbers and bits.

One module per message user, each frozen dataclasses plus encode/decode:

* :mod:`tipcshm.wire.header` -- the generic header every message starts with, the
  constants and enums of msg.h, hot-path word helpers, node identities and 16-bit
  sequence arithmetic;
* :mod:`tipcshm.wire.names` -- NAME_DISTRIBUTOR messages and their 20-byte items.

Everything :mod:`tipcshm.wire.header` exports, and the item helpers of
:mod:`tipcshm.wire.names` (``DistrItem``, ``encode_items``, ...), are re-exported here, so
``from tipcshm import wire; wire.User.LINK_PROTOCOL`` keeps working; the per-user codecs
are imported by module (``from tipcshm.wire import link``).
"""

from tipcshm.wire.header import *  # noqa: F403
from tipcshm.wire.header import __all__ as _header_all
from tipcshm.wire.names import (
    DISTR_ITEM,
    DISTR_ITEM_SIZE,
    DistrItem,
    decode_items,
    encode_items,
)

__all__ = [
    *_header_all,
    "DISTR_ITEM",
    "DISTR_ITEM_SIZE",
    "DistrItem",
    "decode_items",
    "encode_items",
]
