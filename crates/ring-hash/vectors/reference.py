#!/usr/bin/env python3
"""An independent reference for infra-ring-hash placements: the key hash, Jump and uniform
rendezvous, checked against placements.txt.

Usage: python3 reference.py placements.txt

Needs only the Python standard library. The key hash is XXH3-64 with a seed; the stdlib has no
XXH3, so it is written out below for inputs of up to 240 bytes (every key in the vectors file),
following the xxHash specification. With the `xxhash` module installed, it is compared with that
too. The script exits with status 1 on the first disagreement.
"""

import sys

MASK = (1 << 64) - 1
SEED = 0x696E667261317631  # "infra1v1"

P32_1, P32_2, P32_3 = 0x9E3779B1, 0x85EBCA77, 0xC2B2AE3D
P64_1, P64_2, P64_3 = 0x9E3779B185EBCA87, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9
P_MX1, P_MX2 = 0x165667919E3779F9, 0x9FB21C651E98DF25

SECRET = bytes.fromhex(
    "b8fe6c3923a44bbe7c01812cf721ad1cded46de9839097db7240a4a4b7b3671f"
    "cb79e64eccc0e578825ad07dccff7221b8084674f743248ee03590e6813a264c"
    "3c2852bb91c300cb88d0658b1b532ea371644897a20df94e3819ef46a9deacd8"
    "a8fa763fe39c343ff9dcbbc7c70b4f1d8a51e04bcdb45931c89f7ec9d9787364"
    "eac5ac8334d3ebc3c581a0fffa1363eb170ddd51b7f0da49d316552629d4689e"
    "2b16be587d47a1fc8ff8b8d17ad031ce45cb3a8f95160428afd7fbcabb4b407e"
)


def u32(data, at):
    return int.from_bytes(data[at : at + 4], "little")


def u64(data, at):
    return int.from_bytes(data[at : at + 8], "little")


def rotl(x, r):
    return ((x << r) | (x >> (64 - r))) & MASK


def swap32(x):
    return int.from_bytes(x.to_bytes(4, "little"), "big")


def swap64(x):
    return int.from_bytes(x.to_bytes(8, "little"), "big")


def fold(a, b):
    """The 128-bit product of a and b, its halves xored."""
    product = a * b
    return (product ^ (product >> 64)) & MASK


def xxh64_avalanche(h):
    h ^= h >> 33
    h = (h * P64_2) & MASK
    h ^= h >> 29
    h = (h * P64_3) & MASK
    return h ^ (h >> 32)


def xxh3_avalanche(h):
    h ^= h >> 37
    h = (h * P_MX1) & MASK
    return h ^ (h >> 32)


def rrmxmx(h, length):
    h ^= rotl(h, 49) ^ rotl(h, 24)
    h = (h * P_MX2) & MASK
    h ^= ((h >> 35) + length) & MASK
    h = (h * P_MX2) & MASK
    return h ^ (h >> 28)


def mix16(data, at, secret_at, seed):
    low = u64(data, at) ^ ((u64(SECRET, secret_at) + seed) & MASK)
    high = u64(data, at + 8) ^ ((u64(SECRET, secret_at + 8) - seed) & MASK)
    return fold(low, high)


def xxh3_64(data, seed=SEED):
    """XXH3_64bits_withSeed for inputs of 0 to 240 bytes."""
    n = len(data)
    if n == 0:
        return xxh64_avalanche(seed ^ u64(SECRET, 56) ^ u64(SECRET, 64))
    if n <= 3:
        combined = (data[0] << 16) | (data[n >> 1] << 24) | data[n - 1] | (n << 8)
        bitflip = ((u32(SECRET, 0) ^ u32(SECRET, 4)) + seed) & MASK
        return xxh64_avalanche(combined ^ bitflip)
    if n <= 8:
        seed ^= swap32(seed & 0xFFFFFFFF) << 32
        bitflip = ((u64(SECRET, 8) ^ u64(SECRET, 16)) - seed) & MASK
        joined = (u32(data, n - 4) + (u32(data, 0) << 32)) & MASK
        return rrmxmx(joined ^ bitflip, n)
    if n <= 16:
        low = u64(data, 0) ^ (((u64(SECRET, 24) ^ u64(SECRET, 32)) + seed) & MASK)
        high = u64(data, n - 8) ^ (((u64(SECRET, 40) ^ u64(SECRET, 48)) - seed) & MASK)
        acc = n + swap64(low) + high + fold(low, high)
        return xxh3_avalanche(acc & MASK)
    if n <= 128:
        acc = n * P64_1
        # Pairs of 16-byte blocks from both ends, the outermost first.
        for i in range((n - 1) // 32 + 1):
            acc += mix16(data, 16 * i, 32 * i, seed)
            acc += mix16(data, n - 16 * (i + 1), 32 * i + 16, seed)
        return xxh3_avalanche(acc & MASK)
    if n <= 240:
        acc = n * P64_1
        for i in range(8):
            acc += mix16(data, 16 * i, 16 * i, seed)
        acc = xxh3_avalanche(acc & MASK)
        for i in range(8, n // 16):
            acc += mix16(data, 16 * i, 16 * (i - 8) + 3, seed)
        acc += mix16(data, n - 16, 136 - 17, seed)
        return xxh3_avalanche(acc & MASK)
    raise ValueError("this reference covers inputs of up to 240 bytes")


def fmix64(x):
    x ^= x >> 33
    x = (x * 0xFF51AFD7ED558CCD) & MASK
    x ^= x >> 33
    x = (x * 0xC4CEB9FE1A85EC53) & MASK
    return x ^ (x >> 33)


GOLDEN = 0x9E3779B97F4A7C15


def jump(key, buckets):
    """Jump consistent hash with the exact integer step the crate specifies."""
    bucket, step = 0, 0
    while step < buckets:
        bucket = step
        key = (key * 2862933555777941757 + 1) & MASK
        step = ((bucket + 1) << 31) // ((key >> 33) + 1)
    return bucket


def jump_owner(members, removals, key):
    # Node i is bucket i; removing a bucket moves the last node into it.
    buckets = [node for node, _ in members]
    for node in removals:
        at = buckets.index(node)
        buckets[at] = buckets[-1]
        buckets.pop()
    return buckets[jump(xxh3_64(key), len(buckets))]


def rendezvous_owner(members, removals, key):
    # Uniform weights only: the largest fmix64(key ^ fmix64(node ^ GOLDEN)) wins, ties to the
    # smaller node hash.
    left = [node for node, _ in members if node not in removals]
    key_hash = xxh3_64(key)
    best = None
    for node in left:
        node_hash = xxh3_64(node.encode())
        score = fmix64(key_hash ^ fmix64(node_hash ^ GOLDEN))
        candidate = (score, -node_hash, node)
        if best is None or candidate > best:
            best = candidate
    return best[2]


def cases(path):
    case = None
    with open(path, encoding="utf-8") as lines:
        for line in lines:
            fields = line.split()
            if not fields or fields[0].startswith("#"):
                continue
            if fields[0] == "case":
                if case:
                    yield case
                case = {"engine": fields[1], "members": [], "removals": [], "rows": []}
            elif fields[0] == "member":
                case["members"].append((fields[1], int(fields[2])))
            elif fields[0] == "remove":
                case["removals"].append(fields[1])
            elif fields[0] == "key":
                key = b"" if fields[1] == "-" else bytes.fromhex(fields[1])
                case["rows"].append((key, fields[2]))
            else:
                raise ValueError("unexpected line: " + line)
    if case:
        yield case


def main():
    try:
        import xxhash  # optional: the reference binding, when installed
    except ImportError:
        xxhash = None
    checked = {"jump": 0, "rendezvous": 0, "keys": 0}
    for case in cases(sys.argv[1]):
        uniform = all(weight == 1 for _, weight in case["members"])
        for key, expected in case["rows"]:
            if xxhash is not None:
                assert xxh3_64(key) == xxhash.xxh3_64_intdigest(key, seed=SEED), key.hex()
            checked["keys"] += 1
            if case["engine"] == "jump":
                owner = jump_owner(case["members"], case["removals"], key)
            elif case["engine"] == "rendezvous" and uniform:
                owner = rendezvous_owner(case["members"], case["removals"], key)
            else:
                continue
            if owner != expected:
                print(f"{case['engine']} {case['members']} minus {case['removals']}: "
                      f"key {key.hex() or '-'} goes to {owner}, the file says {expected}")
                sys.exit(1)
            checked[case["engine"]] += 1
    if checked["jump"] == 0 or checked["rendezvous"] == 0:
        print("no jump or uniform rendezvous rows found")
        sys.exit(1)
    binding = "also against the xxhash module" if xxhash else "xxhash module not installed"
    print(f"reference.py: {checked['jump']} jump rows agree, {checked['rendezvous']} uniform "
          f"rendezvous rows agree ({checked['keys']} keys hashed; {binding})")


if __name__ == "__main__":
    main()
