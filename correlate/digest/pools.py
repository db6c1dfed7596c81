"""The operator's answer from per-request memory: which sizes share a GPU at what concurrency, each pool's
memory limit, and whether pools by input size or task type would have kept requests from running out of memory.
"""

from __future__ import annotations

from typing import Any

from gpu_rca.correlate.digest import fmt


def pool_advice(
    rows: list[dict[str, Any]], gpus: list[dict[str, Any]], *, task_oom: list[tuple[str, int, int]]
) -> dict[str, Any]:
    """Pools per GPU model (sizes that fit at the same concurrency share one) and the answers in words."""
    by_gpu = []
    answers = []
    oom_total = sum(r["oom"] for r in rows)
    for gpu in gpus:
        name = gpu["gpu_name"]
        worst: dict[int | float, tuple[int, float]] = {}  # size -> (concurrency, GiB) of its largest model
        for r in rows:
            c, need = r["per_gpu"].get(name), r["memory_gib"]
            if c is None or need is None:
                continue
            if r["input_size"] not in worst or need > worst[r["input_size"]][1]:
                worst[r["input_size"]] = (c, need)
        made: list[dict[str, Any]] = []
        for size in sorted(worst):
            c, need = worst[size]
            if made and made[-1]["concurrency"] == c:
                made[-1]["input_sizes"].append(size)
                made[-1]["memory_limit_gib"] = round(gpu["base_gib"] + max(c, 1) * need, 1)
            else:
                made.append(
                    {
                        "input_sizes": [size],
                        "concurrency": c,
                        "memory_limit_gib": round(gpu["base_gib"] + max(c, 1) * need, 1),
                    }
                )
        if not made:
            continue
        by_gpu.append({"gpu_name": name, "pools": made})
        answers.append(_pool_answer(name, gpu, made, rows, oom_total))
    if task_oom and oom_total:
        answers.append(_task_answer(task_oom))
    return {"by_gpu": by_gpu, "answers": answers}


def _pool_answer(
    name: str, gpu: dict[str, Any], made: list[dict[str, Any]], rows: list[dict[str, Any]], oom_total: int
) -> str:
    described = "; ".join(
        f"{_sizes(p['input_sizes'])} px at up to {p['concurrency']} per GPU (memory limit {p['memory_limit_gib']} GiB)"
        if p["concurrency"]
        else f"{_sizes(p['input_sizes'])} px does not fit at all"
        for p in made
    )
    text = f"On {name} ({gpu['memory_total_gib']} GiB, {gpu['base_gib']} GiB held by the idle process): {described}."
    if len(made) > 1 and oom_total:
        largest = made[-1]
        smaller = sum(r["oom"] for r in rows if r["input_size"] not in largest["input_sizes"])
        text += (
            f" Separate pools by input size at these concurrencies would have kept every request within memory: "
            f"the {oom_total} OOM failures ({smaller} of them smaller requests that failed beside larger ones) "
            f"would not have happened. One pool for all sizes must run at most {min(p['concurrency'] for p in made)} "
            f"at a time."
        )
    elif oom_total:
        text += f" One pool at this concurrency would have avoided the {oom_total} OOM failures."
    return text


def _task_answer(task_oom: list[tuple[str, int, int]]) -> str:
    shares = [(task, oom / n) for task, n, oom in task_oom if n]
    low, high = min(s for _, s in shares), max(s for _, s in shares)
    listed = ", ".join(f"{task} {fmt.share(share)}" for task, share in shares)
    if high <= 1.5 * low + 0.01:
        return (
            f"Pools by task type would not have helped: every task type ran out of memory about as often "
            f"({listed}); memory follows the input size and the model."
        )
    return f"OOM failures differ by task type ({listed}): look at what the most affected type sends."


def _sizes(sizes: list[int | float]) -> str:
    return ", ".join(f"{s:g}" for s in sizes)
