"""The ranking's weights and thresholds, each named once with what it means (docs/ranking.md quotes them)."""

from __future__ import annotations

# --- hypotheses and their ranking (causes/base.py, rank.py) ---
#: A hypothesis weaker than this is not a cause.
MIN_STRENGTH = 0.2
#: The fewest failures a cause must explain: this many …
MIN_SUPPORT = 3
#: … or this share of the window's failures, whichever is more.
MIN_SUPPORT_SHARE = 0.02
#: A cause that explains too few failures by itself is still listed as a `low` alternative when it could
#: claim enough of them and its strength is at least this.
ALTERNATIVE_MIN_STRENGTH = 0.3
#: A cause's score is strength × timing × (SCORE_BASE + (1 − SCORE_BASE) × √(share of failures explained)).
SCORE_BASE = 0.4
#: An alternative's score is this × strength × timing × √(share it could claim).
ALTERNATIVE_SCORE = 0.5
#: `high` confidence: strength at least this, the evidence not after the failures, …
HIGH_MIN_STRENGTH = 0.65
#: … the other causes fitting the same failures at most this well relative to it, …
HIGH_MAX_AMBIGUITY = 0.7
#: … and at least this share of the window's failures explained.
HIGH_MIN_SHARE = 0.15
#: `medium` confidence: strength at least this …
MEDIUM_MIN_STRENGTH = 0.4
#: … and the other causes fitting the same failures at most this well relative to it (else `low`).
MEDIUM_MAX_AMBIGUITY = 0.95
#: A part of a request's latency that changed by less than this factor either way is "unchanged".
UNCHANGED = 1.25

# --- the failures' own texts (failure_texts.py) ---
#: OOM failures whose texts are parsed per window (a deterministic sample beyond it).
MAX_OOM_TEXTS = 5000
#: CUDA and lost-GPU failures whose CUDA error strings are read per window.
MAX_ERROR_TEXTS = 5000
#: Memory held by other processes, as a share of the device, that counts as a foreign tenant.
FOREIGN_MEMORY_SHARE = 0.2
#: An OOM is fragmentation when reserved-but-unallocated memory is at least the allocation tried and this
#: share of the device (PyTorch frees whole cached segments before it raises: the rest is stranded).
FRAGMENTED_MIN_SHARE = 0.05

# --- footprints (causes/footprint.py) ---
#: A stratum (same input size, same model) needs this many requests elsewhere to be compared.
STRATUM_MIN_OTHERS = 5
#: How much a local footprint takes off a workload hypothesis (1 = all of it).
LOCAL_FOOTPRINT_DISCOUNT = 0.8
#: Two hypotheses whose footprints conflict over the same failures lower the winner's confidence when the
#: loser fits at least this fraction as well.
CONFLICT_FIT = 0.7

# --- gpu_memory_leak (causes/leak.py) ---
#: A minute-to-minute change of the service's own GPU memory counts when it is at least this share of the device.
CLIMB_STEP = 0.005
#: Minutes in which the service's own GPU memory rose, among the minutes observed, for a full climb ...
LEAK_CLIMB_SHARE = 0.4
#: ... and below which there is no climb at all (a wave of larger inputs raises it a few times, then it plateaus).
LEAK_CLIMB_FLOOR = 0.2
#: Rising minutes a climb needs at least.
LEAK_MIN_RISES = 4
#: The service's own memory at the OOMs against before, for full strength (1.5 = half again).
LEAK_GROWTH = 1.5
#: Share of OOMs whose text shows fragmentation for the allocator (not a leak of live tensors) to be named.
FRAGMENTED_OOM_SHARE = 0.5
