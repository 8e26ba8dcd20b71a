"""Tamper evidence for the event store: a hash chain per aggregate, a running hash of the whole log, and
signed checkpoints of it.

Each stored event is *chained* once, in the log's order, by whoever publishes it (the relay):

- its ``digest`` is the SHA-256 of what the store holds for it (aggregate id, event topic, stored bytes);
- its ``hash`` links it to the previous event of its aggregate: ``H(previous hash, version, digest)``,
  from ``GENESIS`` for an aggregate's first event, so an aggregate's history is one chain;
- the ``log hash`` at its position links it to everything before it in the log:
  ``H(previous log hash, position, hash)``.

A *checkpoint* signs the log hash at a position with a key the database does not hold, so rewriting
the store and the recorded chain together shows at the next checkpoint: nobody without the key can
sign the log hash the rewrite leads to.

``ChainVerifier`` walks the store and the recorded chain side by side, in the log's order, and names
every event that was altered, deleted or moved, and every checkpoint the recorded chain no longer
reaches. It holds one hash per aggregate, not the log, so it can walk a store of any size.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

GENESIS = "0" * 64
CHECKPOINT_VERSION = "trove-es checkpoint/v1"

# What verify finds.
ALTERED = "altered"  # the store holds other bytes for this event than were chained
MISSING = "missing"  # chained, but no longer in the store
REORDERED = "reordered"  # the event's bytes are in the store, at another position or version
INSERTED = "inserted"  # in the store among chained events, but never chained
CHAIN_ALTERED = "chain-altered"  # the recorded chain itself does not add up
CHECKPOINT_BROKEN = "checkpoint-broken"  # a checkpoint's signature or log hash does not hold
UNSIGNED = "unsigned"  # more links after the last checkpoint than a relay leaves: the tail may be re-chained


def event_digest(aggregate_id: str, topic: str, state: bytes) -> str:
    """What the store holds for one event, hashed; its position and version are chained separately."""
    digest = hashlib.sha256()
    for part in (aggregate_id.encode(), b"\x00", topic.encode(), b"\x00", state):
        digest.update(part)
    return digest.hexdigest()


def event_hash(previous_hash: str, version: int, digest: str) -> str:
    return hashlib.sha256(f"{previous_hash}:{version}:{digest}".encode()).hexdigest()


def log_hash(previous_log_hash: str, position: int, hash_: str) -> str:
    return hashlib.sha256(f"{previous_log_hash}:{position}:{hash_}".encode()).hexdigest()


def checkpoint_signature(key: bytes, position: int, events: int, log_hash_: str) -> str:
    message = f"{CHECKPOINT_VERSION}:{position}:{events}:{log_hash_}".encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class StoredEvent:
    """One row of the event store, as the log lists it."""

    position: int
    aggregate_id: str
    version: int
    topic: str
    state: bytes

    @property
    def digest(self) -> str:
        return event_digest(self.aggregate_id, self.topic, self.state)


@dataclass(frozen=True)
class ChainLink:
    """What was recorded when one event was chained."""

    position: int
    aggregate_id: str
    version: int
    digest: str
    previous_hash: str
    hash: str
    log_hash: str


@dataclass(frozen=True)
class Checkpoint:
    position: int
    events: int  # links up to and including ``position``
    log_hash: str
    signature: str
    recorded_at: str


@dataclass(frozen=True)
class Finding:
    kind: str
    position: int
    aggregate_id: str | None
    version: int | None
    detail: str

    def __str__(self) -> str:
        where = f"position {self.position}"
        if self.aggregate_id is not None:
            where += f", aggregate {self.aggregate_id} version {self.version}"
        return f"{self.kind}: {where}: {self.detail}"


class Chainer:
    """Chains events in log order; ``heads`` is each aggregate's last hash, ``log`` the running log hash."""

    def __init__(self, heads: dict[str, str] | None = None, log: str = GENESIS, events: int = 0) -> None:
        self.heads = heads if heads is not None else {}
        self.log = log
        self.events = events

    def link(self, event: StoredEvent) -> ChainLink:
        previous = self.heads.get(event.aggregate_id, GENESIS)
        digest = event.digest
        hash_ = event_hash(previous, event.version, digest)
        self.log = log_hash(self.log, event.position, hash_)
        self.heads[event.aggregate_id] = hash_
        self.events += 1
        return ChainLink(event.position, event.aggregate_id, event.version, digest, previous, hash_, self.log)


def sign(key: bytes, link: ChainLink, events: int, recorded_at: str) -> Checkpoint:
    return Checkpoint(link.position, events, link.log_hash,
                      checkpoint_signature(key, link.position, events, link.log_hash), recorded_at)


@dataclass
class VerifyProgress:
    events: int = 0  # store rows read
    links: int = 0  # recorded links read
    checkpoints: int = 0
    unchained: int = 0  # store rows after the last link: not chained yet


class ChainVerifier:
    """Compares the store with the recorded chain, and the chain with its checkpoints.

    ``stored``, ``links`` and ``checkpoints`` must each come in position order. ``progress`` counts what
    was read so far, for a caller that shows it.
    """

    def __init__(self, key: bytes) -> None:
        self._key = key
        self.progress = VerifyProgress()

    def verify(self, stored: Iterable[StoredEvent], links: Iterable[ChainLink],
               checkpoints: Iterable[Checkpoint], *, max_unsigned: int | None = None) -> list[Finding]:
        """Every finding, in position order. ``max_unsigned``: the most links a working relay leaves after its
        last checkpoint; more is a finding, since a tail cut off with its checkpoints and chained again
        (from edited rows) would otherwise verify."""
        found: list[Finding] = []
        walk = _ChainWalk(self._key, iter(checkpoints), found, self.progress)
        # Positions whose bytes differ from what was chained: (row, link) by the digest the row holds,
        # and the link by the digest it chained; a digest in both moved from one position to another.
        differing: dict[str, tuple[StoredEvent, ChainLink]] = {}
        chained_at: dict[str, ChainLink] = {}
        events, recorded = iter(stored), iter(links)
        event, link = next(events, None), next(recorded, None)
        while event is not None or link is not None:
            if link is not None and (event is None or link.position < event.position):
                found.append(Finding(MISSING, link.position, link.aggregate_id, link.version,
                                     "chained, but the store no longer holds it (deleted)"))
                chained_at.setdefault(link.digest, link)
                walk.follow(link)
                link = next(recorded, None)
                continue
            assert event is not None
            self.progress.events += 1
            if link is None:
                self.progress.unchained += 1
            elif event.position < link.position:
                found.append(Finding(INSERTED, event.position, event.aggregate_id, event.version,
                                     "in the store among chained events, but never chained"))
            else:
                digest = event.digest
                if digest != link.digest:
                    differing[digest] = (event, link)
                    chained_at.setdefault(link.digest, link)
                elif (event.aggregate_id, event.version) != (link.aggregate_id, link.version):
                    found.append(Finding(REORDERED, event.position, event.aggregate_id, event.version,
                                         f"chained as {link.aggregate_id} version {link.version}: the event "
                                         f"was moved within its history"))
                walk.follow(link)
                link = next(recorded, None)
            event = next(events, None)
        walk.finish(max_unsigned)
        for digest, (event, link) in differing.items():
            origin = chained_at.get(digest)
            if origin is not None and origin.position != link.position:
                found.append(Finding(REORDERED, event.position, event.aggregate_id, event.version,
                                     f"holds the event chained at position {origin.position} "
                                     f"({origin.aggregate_id} version {origin.version})"))
            else:
                found.append(Finding(ALTERED, event.position, event.aggregate_id, event.version,
                                     "the store holds other bytes than were chained"))
        return sorted(found, key=lambda f: (f.position, f.kind))


class _ChainWalk:
    """The recorded chain, recomputed link by link, and checked against each checkpoint it passes."""

    def __init__(self, key: bytes, checkpoints: Iterator[Checkpoint], found: list[Finding],
                 progress: VerifyProgress) -> None:
        self._key = key
        self._checkpoints = checkpoints
        self._next = next(checkpoints, None)
        self._found = found
        self._progress = progress
        self._chain = Chainer()  # recomputed from the recorded links: what checkpoints are held against
        self._log_differs = False
        self._signed_upto = 0  # links the last checkpoint passed covers
        self._first_unsigned: ChainLink | None = None

    def follow(self, link: ChainLink) -> None:
        self._progress.links += 1
        chain = self._chain
        previous = chain.heads.get(link.aggregate_id, GENESIS)
        again = event_hash(previous, link.version, link.digest)
        if (link.previous_hash, link.hash) != (previous, again):
            self._found.append(Finding(CHAIN_ALTERED, link.position, link.aggregate_id, link.version,
                                       "the recorded link does not follow from its aggregate's previous one"))
        chain.heads[link.aggregate_id] = again
        chain.log = log_hash(chain.log, link.position, again)
        chain.events += 1
        if chain.log != link.log_hash and not self._log_differs:  # a run of differing ones is reported once
            self._found.append(Finding(CHAIN_ALTERED, link.position, link.aggregate_id, link.version,
                                       "the recorded log hash does not follow from the links before it"))
        self._log_differs = chain.log != link.log_hash
        if self._first_unsigned is None:
            self._first_unsigned = link
        while self._next is not None and self._next.position <= link.position:
            self._check(self._next, link)
            self._signed_upto, self._first_unsigned = chain.events, None
            self._next = next(self._checkpoints, None)

    def finish(self, max_unsigned: int | None) -> None:
        while self._next is not None:
            self._found.append(Finding(CHECKPOINT_BROKEN, self._next.position, None, None,
                                       "the recorded chain ends before this checkpoint: links were removed"))
            self._next = next(self._checkpoints, None)
        unsigned = self._chain.events - self._signed_upto
        first = self._first_unsigned
        if max_unsigned is not None and first is not None and unsigned > max_unsigned:
            self._found.append(Finding(UNSIGNED, first.position, first.aggregate_id, first.version,
                                       f"{unsigned} links from here on are signed by no checkpoint, more than the "
                                       f"relay leaves ({max_unsigned}): checkpoints may have been removed and the "
                                       f"events after them chained again"))

    def _check(self, checkpoint: Checkpoint, link: ChainLink) -> None:
        self._progress.checkpoints += 1
        signed = checkpoint_signature(self._key, checkpoint.position, checkpoint.events, checkpoint.log_hash)
        if not hmac.compare_digest(signed, checkpoint.signature):
            problem = "its signature does not hold: the checkpoint was forged or changed"
        elif checkpoint.position != link.position:
            problem = "no link at the checkpoint's position: links were removed"
        elif (checkpoint.log_hash, checkpoint.events) != (self._chain.log, self._chain.events):
            problem = ("the recorded chain up to here is not the one that was signed: links before it were "
                       "changed, added or removed")
        else:
            return
        self._found.append(Finding(CHECKPOINT_BROKEN, checkpoint.position, None, None, problem))
