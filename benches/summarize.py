"""The summary table of a GPU bench run: criterion's medians (benches/layers.rs), PEFT's
side-by-side numbers (benches/peft_side_by_side.py) and the memory lines the bench
printed, with the first targets of the benchmark issue marked met or missed. roof% is the
path's arithmetic/memory floor (benches/roofline.py) over its measured forward + backward;
seq%, for BatCol's paths, the floor of its own launch sequence (W' and G through memory)
over the same.

  python3 benches/summarize.py CRITERION_HOME [peft.json] [bench.log]
"""

import json
import os
import re
import sys

from roofline import floor_seconds, sequence_seconds

BASE = ["bat-col", "bat-row", "shared", "mini"]
# Our GEMM on mma.sync, on wgmma, on warp-specialised wgmma, and cuBLAS (GemmEngine::label).
ENGINES = ["", "+wgmma", "+wgmma-ws", "+cublas"]
GEMM_NAMES = {"": "mma.sync", "+wgmma": "wgmma", "+wgmma-ws": "wgmma-ws"}
OURS = [v + e for v in BASE for e in ENGINES]
PEFT_FOR = {"lora": "peft-lora", "plan": "peft-bat"}
PEFT_FOR.update({v + e: p for v, p in [("bat-col", "peft-bat"), ("shared", "peft-shared"), ("mini", "peft-mini")] for e in ENGINES})


def bat_col_sequence(path):
    """Which of BatCol's launch sequences (benches/roofline.py) a path runs, or None."""
    if path == "plan":
        return "plan"
    if path.startswith("bat-col"):
        return "cublas" if path.endswith("+cublas") else "fused dB"
    return None


def criterion_medians(root):
    """{group: {function: median seconds}} from criterion's estimates."""
    medians = {}
    for directory, _, files in os.walk(root):
        if os.path.basename(directory) != "new" or "estimates.json" not in files or "benchmark.json" not in files:
            continue
        with open(os.path.join(directory, "benchmark.json")) as f:
            ids = json.load(f)
        with open(os.path.join(directory, "estimates.json")) as f:
            median_ns = json.load(f)["median"]["point_estimate"]
        medians.setdefault(ids["group_id"], {})[ids["function_id"]] = median_ns * 1e-9
    return medians


def log_times(lines):
    """{group: {function: seconds}} from the `time:` lines criterion printed (the middle value,
    its point estimate), for a run whose criterion directory did not come back."""
    units = {"ps": 1e-12, "ns": 1e-9, "µs": 1e-6, "us": 1e-6, "ms": 1e-3, "s": 1.0}
    times, name = {}, None
    for line in lines:
        m = re.match(r"time:\s+\[\S+ \S+ (\S+) (\S+) \S+ \S+\]", line.strip())
        if m and name:
            parts = name.split("/")
            times.setdefault("/".join(parts[:3]), {})["/".join(parts[3:])] = float(m[1]) * units[m[2]]
            name = None
        elif re.fullmatch(r"\S+(/\S+){3,}", line.strip()) and not line.startswith("Benchmarking"):
            name = line.strip()
    return times


def flops(group, function):
    n, k, t = map(int, re.match(r"(\d+)x(\d+)/T(\d+)", group).groups())
    path, pass_ = function.split("/")
    units = 1 if pass_ == "fwd" else {"floor2": 2, "floor3": 3, "bat-col": 3, "plan": 3}.get(path.split("+")[0], 2)
    return 2.0 * t * n * k * units


def print_bat_col_db(medians):
    """BatCol's dB alone on each engine: the fused kernel against G through memory."""
    rows = [(g, e) for g in sorted(medians) if not g.startswith("product/") for e in ENGINES
            if f"bat-col{e}/db" in medians[g]]
    if not rows:
        return
    print(f"\n{'layer':22} {'BatCol dB alone':18} {'ms':>8} {'TFLOP/s':>8} {'/cuBLAS':>8}")
    for group, engine in rows:
        times = medians[group]
        seconds, cublas = times[f"bat-col{engine}/db"], times.get("bat-col+cublas/db")
        share = f"{cublas / seconds:8.0%}" if cublas else "       -"
        name = "unfused, cuBLAS" if engine == "+cublas" else f"fused, {GEMM_NAMES[engine]}"
        print(f"{group:22} {name:18} {seconds * 1e3:8.3f} {flops(group, 'bat-col/fwd') / seconds / 1e12:8.1f} {share}")


def print_extras(medians):
    """What a bias (with dbias), miss_dropout, and keeping X instead of S do to the shared
    block's step."""
    rows = [(g, f) for g in sorted(medians) if not g.startswith("product/") for f in sorted(medians[g])
            if re.match(r"shared\+[^/]+\+(bias|dropout|keeps-x)/fwd_bwd$", f)]
    if not rows:
        return
    print(f"\n{'layer':22} {'path':26} {'f+b ms':>8} {'/without':>9}")
    for group, function in rows:
        seconds = medians[group][function]
        plain = medians[group].get(function.rsplit("+", 1)[0] + "/fwd_bwd")
        share = f"{seconds / plain:9.2f}" if plain else "        -"
        print(f"{group:22} {function.split('/')[0]:26} {seconds * 1e3:8.3f} {share}")


def print_launches(lines):
    """Where each path's step goes: per layer and path, the share of its launches' time in
    products (the crate's GEMMs, cuBLAS) and in the passes on CUDA cores; every launch for
    the square layer."""
    steps = {}
    for line in lines:
        m = re.match(r"launch (\S+) (\S+) (\d+) ([\d.]+) ms (.*)", line)
        if m:
            steps.setdefault((m[1], m[2]), []).append((int(m[3]), float(m[4]), m[5].strip()))
    if not steps:
        return
    print(f"\n{'layer':22} {'path':17} {'launches':>8} {'sum ms':>8} {'products':>9} {'passes':>7}")
    for (group, path), launches in sorted(steps.items()):
        total = sum(ms for _, ms, _ in launches)
        products = sum(ms for _, ms, kernel in launches if kernel.startswith(("bone_gemm_", "cublas ", "bone_bat_col_grads")))
        print(f"{group:22} {path:17} {len(launches):8} {total:8.3f} {products / total:9.0%} {1 - products / total:7.0%}")
    for (group, path), launches in sorted(steps.items()):
        if not group.startswith("4096x4096/"):
            continue
        print(f"\n{group} {path}:")
        for i, ms, kernel in sorted(launches):
            # A product's name carries m x n x k (+ an appended k2) and its batches.
            shape = re.search(r"(\d+)x(\d+)x(\d+)(?:\+(\d+))? x(\d+)", kernel)
            rate = ""
            if shape and ms > 0:
                m, n, k, k2, batches = (int(v or 0) for v in shape.groups())
                rate = f"{2 * m * n * (k + k2) * batches / (ms * 1e-3) / 1e12:7.1f} TFLOP/s"
            print(f"  {i:2} {ms:8.4f} ms {rate:>15}  {kernel}")


def print_products(medians):
    """The plain products (groups product/<layouts>/<m>x<n>x<k>): each engine's TFLOP/s and
    its fraction of cuBLAS's on the same shape."""
    groups = sorted(g for g in medians if g.startswith("product/"))
    if not groups:
        return
    print(f"\n{'product':28} {'engine':8} {'ms':>8} {'TFLOP/s':>8} {'/cuBLAS':>8}")
    for group in groups:
        m, n, k = map(int, group.split("/")[2].split("x"))
        times = medians[group]
        cublas = times.get("cublas")
        for engine in ("native", "wgmma", "wgmma-ws", "cublas"):
            seconds = times.get(engine)
            if seconds is None:
                continue
            share = f"{cublas / seconds:8.0%}" if cublas else "       -"
            print(f"{group:28} {engine:8} {seconds * 1e3:8.3f} {2 * m * n * k / seconds / 1e12:8.1f} {share}")


def print_memory(log, peft):
    """Per layer: what each path keeps between forward and backward and its transient
    memory (our workspace on the default engine, the plan's W' and G; PEFT's peak above
    what the step started with), in MiB, from the bench log's memory lines and PEFT's."""
    rows = {}
    for line in log:
        m = re.match(r"memory (\d+x\d+) T(\d+) r(\d+) ([^\s:]+)", line)
        if not m or m[4].split("+")[-1] in ("wgmma", "wgmma-ws") or m[4] in BASE:
            continue  # the default engine's workspace only (cuBLAS: no partial sums)
        kept = re.search(r"kept between forward and backward (\d+) B \(([^)]*)\)", line)
        transient = re.search(r"(?:workspace|transient) (\d+) B", line)
        rows.setdefault(f"{m[1]}/T{m[2]}/r{m[3]}", []).append(
            (m[4], int(kept[1]) if kept else None, kept[2] if kept else "", int(transient[1]) if transient else None))
    for group, results in peft.items():
        if group in rows:
            for path, r in sorted(results.items()):
                rows[group].append((path, r.get("kept_bytes"), "autograd", r.get("peak_bytes") or None))
    if not rows:
        return
    mib = lambda b: f"{b / 2**20:9.1f}" if b is not None else "        -"
    print(f"\n{'layer':22} {'path':17} {'kept MiB':>9} {'what':14} {'transient MiB':>13}")
    for group in sorted(rows):
        for path, kept, what, transient in rows[group]:
            print(f"{group:22} {path:17} {mib(kept)} {what:14} {mib(transient):>13}")


def print_readme_table(medians, peft):
    """The README's table, in markdown: forward + backward ms of each variant on the
    default (cuBLAS) engine with its ratio to LoRA (BatCol's to the three-GEMM floor, its
    own baseline), the crate's fastest GEMM on the shared block, and PEFT (eager, graphed)."""
    layers = ["4096x4096", "11008x4096", "4096x11008"]  # Llama-2-7B's: attention, then the MLP's two
    order = lambda g: (int(g.split("T")[1].split("/")[0]), layers.index(g.split("/")[0]) if g.split("/")[0] in layers else 9, g)
    groups = sorted((g for g in medians if g.endswith("/r64") and not g.startswith("product/")), key=order)
    if not groups:
        return
    print("\nREADME table (markdown):\n")
    print("| layer, T (r = 64) | LoRA | floor3 | BatCol | BatRow | shared | mini | shared, own GEMM | PEFT bat, eager / graphed |")
    print("|---|---|---|---|---|---|---|---|---|")
    for group in groups:
        times = {f: v * 1e3 for f, v in medians[group].items()}
        both = lambda path: times.get(f"{path}/fwd_bwd")
        lora, floor3 = both("lora"), both("floor3")
        def against(path, base, name):
            ms = both(path)
            return f"{ms:.3f} ({ms / base:.2f}x {name})" if ms and base else (f"{ms:.3f}" if ms else "-")
        own = min(((both("shared" + e), GEMM_NAMES[e]) for e in ("", "+wgmma-ws") if both("shared" + e)), default=None)
        own_cell = f"{own[0]:.3f} ({own[1]}, {own[0] / both('shared+cublas'):.2f}x cuBLAS's)" if own and both("shared+cublas") else "-"
        bat = peft.get(group, {}).get("peft-bat", {})
        eager, graphed = bat.get("fwd_bwd_ms"), bat.get("fwd_bwd_graph_ms")
        peft_cell = " / ".join(f"{v:.3f}" if v else "-" for v in (eager, graphed)) if bat else "-"
        n, k, t = re.match(r"(\d+)x(\d+)/T(\d+)", group).groups()
        print(f"| {n} x {k}, T = {t} | {lora:.3f} | {floor3:.3f} | {against('bat-col+cublas', floor3, 'floor3')} | "
              f"{against('bat-row+cublas', lora, 'LoRA')} | {against('shared+cublas', lora, 'LoRA')} | "
              f"{against('mini+cublas', lora, 'LoRA')} | {own_cell} | {peft_cell} |")


def main():
    medians = criterion_medians(sys.argv[1])
    peft = {}
    if len(sys.argv) > 2 and os.path.exists(sys.argv[2]):
        with open(sys.argv[2]) as f:
            peft = json.load(f)
    kept, log = {}, []
    if len(sys.argv) > 3 and os.path.exists(sys.argv[3]):
        log = open(sys.argv[3]).read().splitlines()
        for line in log:
            m = re.match(r"memory (\d+x\d+) T(\d+) r(\d+) (\S+).*kept between forward and backward (\d+) B", line)
            if m:
                kept[(f"{m[1]}/T{m[2]}/r{m[3]}", m[4])] = int(m[5])
    if not medians and log:
        medians = log_times(log)
        print(f"(no criterion estimates under {sys.argv[1]}: times are the point estimates the bench log printed)")
    targets = []
    # /PEFT: against PEFT run eagerly (a call a step, Python's overhead in it); /PEFTg:
    # against the same step replayed from a CUDA graph (the GPU's time alone).
    print(f"\n{'layer':22} {'path':17} {'fwd ms':>8} {'f+b ms':>8} {'TFLOP/s':>8} {'roof%':>6} {'seq%':>5} {'/LoRA':>6} {'/floor':>7} "
          f"{'/PEFT':>6} {'/PEFTg':>6}")
    for group in sorted(g for g in medians if not g.startswith("product/")):
        times = medians[group]
        get = lambda path, p: times.get(f"{path}/{p}")
        lora = get("lora", "fwd_bwd")
        for path in OURS + ["plan", "lora"]:
            fwd, both = get(path, "fwd"), get(path, "fwd_bwd")
            if both is None:
                continue
            floor = get("floor3" if path.startswith("bat-col") or path == "plan" else "floor2", "fwd_bwd")
            peft_path = peft.get(group, {}).get(PEFT_FOR.get(path, ""), {})
            peft_ms, peft_graph_ms = peft_path.get("fwd_bwd_ms"), peft_path.get("fwd_bwd_graph_ms")
            ratio = lambda a, b: f"{a / b:6.2f}" if a and b else "     -"
            roof = floor_seconds(group, path, "fwd_bwd") / both
            sequence = bat_col_sequence(path)
            seq = f"{sequence_seconds(group, sequence, 'fwd_bwd') / both:5.0%}" if sequence else f"{'-':>5}"
            print(f"{group:22} {path:17} {fwd * 1e3 if fwd else float('nan'):8.3f} {both * 1e3:8.3f} "
                  f"{flops(group, path + '/fwd_bwd') / both / 1e12:8.1f} {roof:6.0%} {seq} {ratio(both, lora)} "
                  f"{ratio(both, floor):>7} {ratio(both * 1e3, peft_ms)} {ratio(both * 1e3, peft_graph_ms)}")
            if path.split("+")[0] in ("bat-row", "shared", "mini") and lora:
                targets.append((f"{group} {path} fwd+bwd <= 1.15 x LoRA", both / lora, both <= 1.15 * lora))
            if path.startswith("bat-col") and floor:
                # BatCol's own arithmetic (W' and dB's blocks, r / T of the products) sets a floor above floor3's.
                # Its launch sequence, W' (and G) through memory, sets a higher one.
                floor3 = floor_seconds(group, "floor3", "fwd_bwd")
                method = floor_seconds(group, "bat-col", "fwd_bwd") / floor3
                own = sequence_seconds(group, sequence, "fwd_bwd") / floor3
                targets.append((f"{group} {path} fwd+bwd <= 1.05 x 3-GEMM floor (the method's own floor: "
                                f"{method:.2f} x, its launch sequence's: {own:.2f} x)", both / floor, both <= 1.05 * floor))
                # Judged against PEFT's GPU time (graphed) where it was measured: the stricter.
                peft_best, how = (peft_graph_ms, "graphed") if peft_graph_ms else (peft_ms, "eager")
                if peft_best:
                    targets.append((f"{group} {path} faster than PEFT bat ({how})", both * 1e3 / peft_best, both * 1e3 < peft_best))
        floor_fwd, shared_cublas = get("floor", "fwd"), get("shared+cublas", "fwd")
        for engine, gemm in GEMM_NAMES.items():
            shared_fwd = get("shared" + engine, "fwd")
            if floor_fwd and shared_fwd:
                print(f"{group:22} our {gemm} GEMM (shared fwd) at {floor_fwd / shared_fwd:.0%} of cuBLAS's X W^T throughput")
            if shared_fwd and shared_cublas:
                print(f"{group:22} shared fwd, our {gemm} GEMM / cuBLAS engine time: {shared_fwd / shared_cublas:.2f}")
    for (group, path), ours in sorted(kept.items()):
        lora_kept = kept.get((group, "lora"))
        if path in OURS and lora_kept:
            targets.append((f"{group} {path} kept memory <= LoRA's", ours / lora_kept, ours <= lora_kept))
    print_bat_col_db(medians)
    print_extras(medians)
    print_launches(log)
    print_products(medians)
    print_memory(log, peft)
    print_readme_table(medians, peft)
    print("\ntargets:")
    for name, value, met in targets:
        print(f"  {'met   ' if met else 'MISSED'} {name} ({value:.2f})")


if __name__ == "__main__":
    main()
