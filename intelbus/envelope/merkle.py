"""Merkle tree hashes and inclusion proofs exactly as RFC 9162 (Certificate Transparency 2.0) §2.1.

A format-3 producer signs the root of a tree over a batch of records (docs/envelope.md, "Batch
signatures (v3)"); each record carries its inclusion path, so it still verifies alone. The hashes
are domain-separated, as in RFC 9162 §2.1.1, so a leaf can never be taken for an inner node or
the reverse (the second-preimage attack on unprefixed Merkle trees)::

    leaf hash  = SHA-256(0x00 || leaf bytes)
    node hash  = SHA-256(0x01 || left || right)
    MTH(D[n])  = node hash(MTH(D[0:k]), MTH(D[k:n])), k the largest power of two below n

SHA-256 from hashlib (OpenSSL): no new primitive. Nothing here reads a wire format; the envelope's
trailer is parsed (and its path length checked) by :mod:`intelbus.envelope.wire`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

HASH_BYTES = 32
_LEAF_PREFIX = b"\x00"
_NODE_PREFIX = b"\x01"


def leaf_hash(leaf: bytes) -> bytes:
    """SHA-256(0x00 || leaf): the hash of one record's leaf bytes."""
    return hashlib.sha256(_LEAF_PREFIX + leaf).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """SHA-256(0x01 || left || right): an inner node."""
    return hashlib.sha256(_NODE_PREFIX + left + right).digest()


def path_length(index: int, size: int) -> int:
    """The number of hashes in the inclusion path of leaf ``index`` in a tree of ``size`` leaves.

    The levels where ``index`` and the last leaf part ways each give one sibling; above them, the
    path follows the tree's right border, where a node has a left sibling for each 1 bit left.

    Raises:
        ValueError: not ``0 <= index < size``.
    """
    if not 0 <= index < size:
        raise ValueError(f"leaf index {index} is not in a tree of {size} leaves")
    inner = (index ^ (size - 1)).bit_length()
    return inner + (index >> inner).bit_count()


def levels(leaf_hashes: Sequence[bytes]) -> list[list[bytes]]:
    """Every level of the tree over ``leaf_hashes``, leaves first, the root's level last.

    Pairs are hashed left to right; a level's odd last node moves up unchanged. This builds the
    same tree as RFC 9162's recursive MTH (whose left subtree is always a full power of two), in
    one pass.

    Raises:
        ValueError: no leaves (a batch holds at least one record).
    """
    if not leaf_hashes:
        raise ValueError("a tree needs at least one leaf")
    out = [list(leaf_hashes)]
    while len(out[-1]) > 1:
        below = out[-1]
        up = [node_hash(below[i], below[i + 1]) for i in range(0, len(below) - 1, 2)]
        if len(below) % 2:
            up.append(below[-1])
        out.append(up)
    return out


def root(leaves: Sequence[bytes]) -> bytes:
    """MTH(D[n]) of the leaves' bytes (RFC 9162 §2.1.1), for any n >= 1.

    Raises:
        ValueError: no leaves.
    """
    return levels([leaf_hash(x) for x in leaves])[-1][0]


def path_from_levels(tree: Sequence[Sequence[bytes]], index: int) -> tuple[bytes, ...]:
    """PATH(index, D[n]) from a tree built by :func:`levels`: siblings from the leaf upwards.

    Raises:
        ValueError: ``index`` is not a leaf of the tree.
    """
    if not 0 <= index < len(tree[0]):
        raise ValueError(f"leaf index {index} is not in a tree of {len(tree[0])} leaves")
    path = []
    for level in tree[:-1]:
        sibling = index ^ 1
        if sibling < len(level):  # else: the odd last node, moved up without a sibling
            path.append(level[sibling])
        index >>= 1
    return tuple(path)


def paths_from_levels(tree: Sequence[Sequence[bytes]]) -> list[tuple[bytes, ...]]:
    """:func:`path_from_levels` of every leaf, leaf 0 first (one pass over the levels)."""
    size = len(tree[0])
    paths: list[list[bytes]] = [[] for _ in range(size)]
    for height, level in enumerate(tree[:-1]):
        count = len(level)
        for index in range(size):
            sibling = (index >> height) ^ 1
            if sibling < count:  # else: the odd last node, moved up without a sibling
                paths[index].append(level[sibling])
    return [tuple(p) for p in paths]


def inclusion_proof(leaves: Sequence[bytes], index: int) -> tuple[bytes, ...]:
    """PATH(index, D[n]) (RFC 9162 §2.1.3.1) of the leaves' bytes.

    Raises:
        ValueError: no leaves, or ``index`` out of range.
    """
    return path_from_levels(levels([leaf_hash(x) for x in leaves]), index)


def root_from_proof(leaf: bytes, index: int, size: int, path: Sequence[bytes]) -> bytes:
    """The root an inclusion path leads to from a leaf hash: RFC 9162 §2.1.3.2, step for step.

    ``leaf`` is the leaf's *hash* (:func:`leaf_hash` of its bytes, computed by the verifier, never
    taken from the record). The caller compares (here: signs over) the result; this function only
    refuses a proof that cannot belong to any tree of ``size`` leaves.

    Raises:
        ValueError: ``index >= size``, a hash of the wrong length, or a path too long or too
            short for ``(index, size)``.
    """
    # Step 1.
    if not 0 <= index < size:
        raise ValueError(f"leaf index {index} is not in a tree of {size} leaves")
    if len(leaf) != HASH_BYTES or any(len(p) != HASH_BYTES for p in path):
        raise ValueError(f"hashes must be {HASH_BYTES} bytes")
    # Steps 2 and 3.
    fn, sn = index, size - 1
    r = leaf
    # Step 4.
    for p in path:
        if sn == 0:  # 4a: the path is longer than the tree is high
            raise ValueError("inclusion path too long for the tree size")
        if fn & 1 or fn == sn:  # 4b
            r = node_hash(p, r)
            while fn and not fn & 1:  # 4b.ii: up the right border, past levels with no sibling
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1  # 4c
        sn >>= 1
    # Step 5 (the root comparison is the caller's: the signature is checked over this root).
    if sn != 0:
        raise ValueError("inclusion path too short for the tree size")
    return r
