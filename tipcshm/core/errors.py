"""Whose fault: the two protocol error families of the sans-IO core (after h11).

* :class:`LocalProtocolError` -- our caller misused the object: sent on a link that is
  not up, asked a connection in LISTEN to connect, gave a message larger than the
  protocol allows. The object's state is unchanged; fix the caller.
* :class:`RemoteProtocolError` -- the peer (or whoever can reach the bearer) sent bytes
  that are not a valid message for this object: a truncated header, an impossible size,
  a name-distributor payload that is not whole items. ``receive`` raises it *before*
  changing any state, so the owner counts the frame, drops it and goes on; a hostile
  frame costs its sender the frame, never the node.

Anything else escaping ``receive`` is a bug in tipcshm; the fuzz properties of every
core object say so. Frames that are valid but unwanted (a duplicate, an old session, a
packet for another node) are not errors at all: they are dropped silently and counted in
the object's ``statistics()``, as the kernel does.
"""

from __future__ import annotations


class ProtocolError(Exception):
    """Base of the two families; catch the one whose fault you handle."""


class LocalProtocolError(ProtocolError):
    """The caller misused a protocol object (our fault)."""


class RemoteProtocolError(ProtocolError):
    """The peer sent something invalid (their fault)."""


__all__ = ["LocalProtocolError", "ProtocolError", "RemoteProtocolError"]
