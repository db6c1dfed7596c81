"""A stand-in for `nvidia-smi --query-gpu=FIELDS --format=csv,noheader,nounits` where no GPU exists.

It prints what nvidia-smi prints for that query (one CSV line per GPU, values without units), so the
stamping benchmark can time the seed article's subprocess-per-query approach on any machine. Only the
output format is imitated; the numbers are fixed.
"""

from __future__ import annotations

import sys

#: field -> value for GPU 0 (nvidia-smi's --query-gpu names)
VALUES = {
    "index": "0",
    "uuid": "GPU-2712c8c2-8281-4574-b054-042c7dd13854",
    "name": "NVIDIA L4",
    "pci.bus_id": "00000000:18:00.0",
    "temperature.gpu": "61",
    "power.draw": "55.32",
    "power.limit": "72.00",
    "enforced.power.limit": "72.00",
    "memory.used": "6144",
    "memory.total": "23034",
    "utilization.gpu": "87",
    "utilization.memory": "39",
    "clocks.sm": "2040",
    "clocks.max.sm": "2040",
    "clocks_event_reasons.active": "0x0000000000000000",
    "clocks_throttle_reasons.active": "0x0000000000000000",
    "ecc.errors.uncorrected.volatile.total": "0",
    "ecc.errors.corrected.volatile.total": "0",
}


def main(argv: list[str]) -> int:
    query = next((a.split("=", 1)[1] for a in argv if a.startswith("--query-gpu=")), None)
    fmt = next((a.split("=", 1)[1] for a in argv if a.startswith("--format=")), "")
    if query is None or "csv" not in fmt:
        print(
            "usage: nvidia_smi_standin.py --query-gpu=FIELD[,FIELD...] --format=csv,noheader,nounits", file=sys.stderr
        )
        return 2
    fields = [f.strip() for f in query.split(",")]
    unknown = [f for f in fields if f not in VALUES]
    if unknown:
        print(f'Field "{unknown[0]}" is not a valid field to query.', file=sys.stderr)
        return 2
    if "noheader" not in fmt:
        print(", ".join(fields))
    print(", ".join(VALUES[f] for f in fields))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
