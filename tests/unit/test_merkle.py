"""intelbus/envelope/merkle.py against RFC 9162 §2.1, an independent naive implementation, and
the known-answer vectors of the Certificate Transparency reference code.

The naive implementation below is the RFC's recursive definitions written out literally (MTH and
PATH, §2.1.1 and §2.1.3.1); the module under test builds the tree level by level and verifies
with the iterative algorithm of §2.1.3.2, so the two share no code.

Known answers: ``transparency-dev/merkle`` (the Go library behind Trillian and the CT logs),
``proof/verify_test.go`` at commit 02194e9afb6c1d95b5381350007963aa70fff472: the eight leaves
``leaves``, the roots of their first 1..8 leaves ``roots``, and the inclusion proofs
``inclusionProofs`` (whose leaf numbers there are 1-based).
"""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from intelbus.envelope import merkle


def _sha(b: bytes) -> bytes:
    return hashlib.sha256(b).digest()


def naive_mth(leaves: list[bytes]) -> bytes:
    """RFC 9162 §2.1.1, literally."""
    n = len(leaves)
    if n == 0:
        return _sha(b"")
    if n == 1:
        return _sha(b"\x00" + leaves[0])
    k = 1
    while k * 2 < n:
        k *= 2
    return _sha(b"\x01" + naive_mth(leaves[:k]) + naive_mth(leaves[k:]))


def naive_path(m: int, leaves: list[bytes]) -> list[bytes]:
    """RFC 9162 §2.1.3.1, literally."""
    n = len(leaves)
    if n == 1:
        return []
    k = 1
    while k * 2 < n:
        k *= 2
    if m < k:
        return [*naive_path(m, leaves[:k]), naive_mth(leaves[k:])]
    return [*naive_path(m - k, leaves[k:]), naive_mth(leaves[:k])]


# --- Known answers (transparency-dev/merkle, proof/verify_test.go; see the module docstring). ----

KAT_LEAVES = [
    bytes.fromhex(h)
    for h in (
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    )
]
KAT_ROOTS = [
    bytes.fromhex(h)
    for h in (
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    )
]
# (0-based leaf index, tree size, path), from inclusionProofs (1-based leaf numbers there).
KAT_PROOFS = [
    (0, 1, []),
    (
        0,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        5,
        8,
        [
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (2, 3, ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
    (
        1,
        5,
        [
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
]


def test_empty_tree_hash_is_sha256_of_nothing() -> None:
    """The naive reference agrees with RFC 9162's MTH({}) (the module refuses empty batches)."""
    assert naive_mth([]).hex() == (
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    )
    with pytest.raises(ValueError, match="at least one leaf"):
        merkle.root([])


@pytest.mark.parametrize("n", range(1, 9))
def test_known_roots(n: int) -> None:
    assert merkle.root(KAT_LEAVES[:n]) == KAT_ROOTS[n - 1]
    assert naive_mth(KAT_LEAVES[:n]) == KAT_ROOTS[n - 1]  # the reference is right too


@pytest.mark.parametrize(("index", "size", "path"), KAT_PROOFS)
def test_known_inclusion_proofs(index: int, size: int, path: list[str]) -> None:
    expected = tuple(bytes.fromhex(p) for p in path)
    assert merkle.inclusion_proof(KAT_LEAVES[:size], index) == expected
    leaf = merkle.leaf_hash(KAT_LEAVES[index])
    assert merkle.root_from_proof(leaf, index, size, expected) == KAT_ROOTS[size - 1]


@pytest.mark.parametrize(("index", "size", "path"), [p for p in KAT_PROOFS if p[2]])
def test_known_proofs_corrupted_lead_elsewhere(index: int, size: int, path: list[str]) -> None:
    """The corruptions of transparency-dev's corruptInclusionProof: none reaches the root."""
    proof = [bytes.fromhex(p) for p in path]
    leaf = merkle.leaf_hash(KAT_LEAVES[index])
    good = KAT_ROOTS[size - 1]
    some = bytes.fromhex("abacaba000000000000000000000000000000000000000000060061e00123456")
    probes: list[tuple[int, int, bytes, list[bytes]]] = [
        (index + 1, size, leaf, proof),
        (index ^ 2, size, leaf, proof),
        (index, size * 2, leaf, proof),
        (index, size // 2, leaf, proof),
        (index, size, merkle.leaf_hash(b"WrongLeaf"), proof),
        (index, size, leaf, [*proof, good]),
        (index, size, leaf, [good, *proof]),
        (index, size, leaf, proof[:-1]),
        (index, size, leaf, [proof[0], some, *proof[1:]]),
    ]
    if index > 0:
        probes.append((index - 1, size, leaf, proof))
    for i in range(len(proof)):
        flipped = [bytearray(p) for p in proof]
        flipped[i][0] ^= 8
        probes.append((index, size, leaf, [bytes(p) for p in flipped]))
    for idx, n, lf, pth in probes:
        try:
            got = merkle.root_from_proof(lf, idx, n, pth)
        except ValueError:
            continue  # refused outright: a path too long or short, or an index past the end
        assert got != good, (idx, n, len(pth))


# --- Against the naive implementation, every index of every size 1..300. --------------------------


@settings(max_examples=25, deadline=None)
@given(size=st.integers(1, 300), seed=st.binary(min_size=1, max_size=8))
def test_every_index_of_random_trees_matches_the_rfc(size: int, seed: bytes) -> None:
    leaves = [seed + i.to_bytes(2, "big") for i in range(size)]
    expected_root = naive_mth(leaves)
    assert merkle.root(leaves) == expected_root
    tree = merkle.levels([merkle.leaf_hash(x) for x in leaves])
    for index in range(size):
        path = merkle.path_from_levels(tree, index)
        assert list(path) == naive_path(index, leaves)
        assert len(path) == merkle.path_length(index, size)
        assert merkle.root_from_proof(merkle.leaf_hash(leaves[index]), index, size, path) == (
            expected_root
        )


def test_every_size_up_to_300_matches_the_rfc_exhaustively() -> None:
    """No sampling: each size once, each index (the property above varies the leaves)."""
    leaves = [i.to_bytes(2, "big") for i in range(300)]
    for size in range(1, 301):
        expected = naive_mth(leaves[:size]) if size <= 40 else None
        tree = merkle.levels([merkle.leaf_hash(x) for x in leaves[:size]])
        if expected is not None:
            assert tree[-1][0] == expected
        for index in range(size):
            path = merkle.path_from_levels(tree, index)
            assert len(path) == merkle.path_length(index, size)
            leaf = merkle.leaf_hash(leaves[index])
            assert merkle.root_from_proof(leaf, index, size, path) == tree[-1][0]


@settings(max_examples=80, deadline=None)
@given(data=st.data(), size=st.integers(2, 300))
def test_a_path_for_one_index_fits_no_other(data: st.DataObject, size: int) -> None:
    """A path moved to another index of the same tree is refused or leads to another root."""
    leaves = [i.to_bytes(2, "big") for i in range(size)]
    tree = merkle.levels([merkle.leaf_hash(x) for x in leaves])
    index = data.draw(st.integers(0, size - 1))
    other = data.draw(st.integers(0, size - 1).filter(lambda i: i != index))
    path = merkle.path_from_levels(tree, index)
    try:
        got = merkle.root_from_proof(merkle.leaf_hash(leaves[index]), other, size, path)
    except ValueError:
        return
    assert got != tree[-1][0]


def test_the_tree_size_is_not_implied_by_the_path() -> None:
    """Leaf 0's path in a tree of 3 leads to the same root read as a tree of 4 (both have two
    levels above leaf 0, with the sibling always on the right). This is why the envelope signs
    the tree size in the root message (wire.batch_root_message): the proof alone does not fix it.
    """
    leaves = [b"a", b"b", b"c"]
    path = merkle.inclusion_proof(leaves, 0)
    leaf = merkle.leaf_hash(b"a")
    assert merkle.root_from_proof(leaf, 0, 3, path) == merkle.root(leaves)
    assert merkle.root_from_proof(leaf, 0, 4, path) == merkle.root(leaves)


# --- Refusals of §2.1.3.2, and domain separation. ---------------------------------------------------


def test_index_at_or_past_the_size_is_refused() -> None:
    leaf = merkle.leaf_hash(b"x")
    for index, size in ((0, 0), (1, 1), (5, 5), (9, 4)):
        with pytest.raises(ValueError, match="not in a tree"):
            merkle.root_from_proof(leaf, index, size, [])
        with pytest.raises(ValueError, match="not in a tree"):
            merkle.path_length(index, size)


def test_paths_too_long_or_too_short_are_refused() -> None:
    leaves = [bytes([i]) for i in range(6)]
    tree = merkle.levels([merkle.leaf_hash(x) for x in leaves])
    path = merkle.path_from_levels(tree, 4)  # index 4 of 6: two hashes
    leaf = merkle.leaf_hash(leaves[4])
    assert len(path) == merkle.path_length(4, 6) == 2
    with pytest.raises(ValueError, match="too long"):
        merkle.root_from_proof(leaf, 4, 6, [*path, path[0]])
    with pytest.raises(ValueError, match="too short"):
        merkle.root_from_proof(leaf, 4, 6, path[:1])
    with pytest.raises(ValueError, match="too long"):
        merkle.root_from_proof(leaf, 0, 1, [leaf])
    with pytest.raises(ValueError, match="32 bytes"):
        merkle.root_from_proof(leaf, 4, 6, [path[0], path[1][:31]])


def test_leaves_and_nodes_are_domain_separated() -> None:
    """An inner node's 64-byte concatenation given as a leaf, or a leaf hash given as a node,
    leads to no root of the real tree: the 0x00 / 0x01 prefixes (RFC 9162 §2.1.1)."""
    leaves = [bytes([i]) * 3 for i in range(4)]
    tree = merkle.levels([merkle.leaf_hash(x) for x in leaves])
    root = tree[-1][0]
    a, b, _c, _d = tree[0]
    ab, cd = tree[1]
    assert merkle.node_hash(a, b) == ab
    # The node (a, b) presented as a leaf whose bytes are a || b, at index 0 of a tree of 2.
    assert merkle.root_from_proof(merkle.leaf_hash(a + b), 0, 2, [cd]) != root
    # Without the prefixes the forgery would work: the unprefixed hash of a || b is what an
    # unprefixed tree would hold at that node.
    assert merkle.root_from_proof(ab, 0, 2, [cd]) == root  # (a node hash given as a leaf hash)
    # A leaf's bytes presented as a node: its leaf hash is not the node of its two halves.
    assert merkle.leaf_hash(a + b) != merkle.node_hash(a, b)
    assert merkle.node_hash(leaves[0], leaves[1]) != merkle.node_hash(a, b)


def test_path_length_matches_the_rfc_for_every_position() -> None:
    """The closed form (used by the parser to fix a trailer's length) against the recursion."""
    for size in range(1, 70):
        leaves = [bytes([i]) for i in range(size)]
        for index in range(size):
            assert merkle.path_length(index, size) == len(naive_path(index, leaves))
    assert merkle.path_length(0, 1) == 0
    assert merkle.path_length(255, 256) == 8
    assert merkle.path_length(1023, 1024) == 10
