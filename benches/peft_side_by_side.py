"""PEFT's own MiSS/Bone layers and PEFT LoRA on the shapes benches/layers.rs uses,
measured the same way: CUDA events, warm-up, median of many, bf16 base weights, the
adapter in PEFT's default dtype (f32), X requiring grad as inside a network.

For each shape, T and path it reports: forward and forward + backward time (median ms),
eager (a call per step, as a PEFT user runs it: Python's and autograd's launch overhead
included) and, on the GPU, replayed from a CUDA graph of the step (the GPU's time alone,
the fair comparison with kernels launched from Rust; `*_graph_ms`, or `graph_error` with
the reason where capture failed); the memory autograd keeps between forward and backward
(bytes of the tensors saved for backward, counted once each, the model's parameters not
counted), and the peak memory of one step above what was allocated before it. Writes JSON
to --out and prints a short table.

  python3 benches/peft_side_by_side.py --out peft.json [--quick]
  python3 benches/peft_side_by_side.py --out /tmp/p.json --device cpu --smoke   # checks the script, no GPU
"""

import argparse
import json
import statistics
import time

import peft
import torch

SHAPES = [(4096, 4096), (11008, 4096), (4096, 11008)]
TOKENS = [512, 4096]
R = 64


DEVICE = "cuda"


def layer(path, k, n, r):
    base = torch.nn.Sequential(torch.nn.Linear(k, n, bias=False)).to(DEVICE, torch.bfloat16)
    for p in base.parameters():
        p.requires_grad_(False)
    if path == "peft-lora":
        config = peft.LoraConfig(r=r // 2, lora_alpha=r // 2, target_modules=["0"], lora_dropout=0.0)
    else:
        init = {"peft-bat": "bat", "peft-shared": True, "peft-mini": "mini"}[path]
        extra = {"mini_r": r} if init == "mini" else {}
        config = peft.MissConfig(r=r, init_weights=init, target_modules=["0"], **extra)
    model = peft.get_peft_model(base, config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.requires_grad:
                p.copy_(torch.randn_like(p) * 0.01)
    return model


def kept_bytes(model, x):
    """Bytes of the tensors autograd saves for the backward, each counted once, less the
    model's own parameters (the frozen W among them): those exist whether or not a step
    runs, as the Rust benches count (X and what each path adds)."""
    parameters = {(p.data_ptr(), p.numel()) for p in model.parameters()}
    seen = {}

    def pack(tensor):
        key = (tensor.data_ptr(), tensor.numel())
        if key not in parameters:
            seen[key] = tensor.numel() * tensor.element_size()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(x)
    return sum(seen.values())


def timed(fn, repeats):
    """Median milliseconds of `fn`: CUDA events on the GPU, the wall clock on the CPU."""
    for _ in range(3):
        fn()
    times = []
    for _ in range(repeats):
        if DEVICE == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end))
        else:
            began = time.perf_counter()
            fn()
            times.append((time.perf_counter() - began) * 1e3)
    return statistics.median(times)


def graphed_ms(model, x, dy, repeats):
    """Median ms of the forward, and of forward + backward, each replayed from a CUDA graph
    (PyTorch's whole-network capture: warm-up on a side stream, gradients set to None so
    the captured backward writes them from the graph's pool on every replay). x requires
    grad, as inside a network."""

    def step():
        model.zero_grad(set_to_none=True)
        x.grad = None
        model(x).backward(dy)

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            step()
    torch.cuda.current_stream().wait_stream(side)
    forward_graph, step_graph = torch.cuda.CUDAGraph(), torch.cuda.CUDAGraph()
    with torch.no_grad(), torch.cuda.graph(forward_graph):
        model(x)
    model.zero_grad(set_to_none=True)
    x.grad = None
    with torch.cuda.graph(step_graph):
        model(x).backward(dy)
    return {"fwd_graph_ms": timed(forward_graph.replay, repeats), "fwd_bwd_graph_ms": timed(step_graph.replay, repeats)}


def measure_graphed(path, k, n, t, r, repeats):
    """graphed_ms on a fresh layer; a capture that fails is reported (`graph_error`), not hidden."""
    model = layer(path, k, n, r)
    x = torch.randn(t, k, device=DEVICE, dtype=torch.bfloat16, requires_grad=True)
    dy = torch.randn(t, n, device=DEVICE, dtype=torch.bfloat16)
    try:
        return graphed_ms(model, x, dy, repeats)
    except Exception as error:  # noqa: BLE001 -- any failure is written into the results
        return {"graph_error": f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"}
    finally:
        del model
        torch.cuda.empty_cache()


def measure(path, k, n, t, r, repeats):
    model = layer(path, k, n, r)
    xs = [torch.randn(t, k, device=DEVICE, dtype=torch.bfloat16, requires_grad=True) for _ in range(2)]
    dy = torch.randn(t, n, device=DEVICE, dtype=torch.bfloat16)
    state = {"i": 0}

    def forward():
        state["i"] += 1
        with torch.no_grad():
            model(xs[state["i"] % 2])

    def step():
        state["i"] += 1
        model(xs[state["i"] % 2]).backward(dy)

    result = {"fwd_ms": timed(forward, repeats), "fwd_bwd_ms": timed(step, repeats), "kept_bytes": kept_bytes(model, xs[0])}
    if DEVICE == "cuda":
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        step()
        torch.cuda.synchronize()
        result["peak_bytes"] = torch.cuda.max_memory_allocated() - before
        torch.cuda.empty_cache()
    else:
        result["peak_bytes"] = 0  # no allocator statistics on the CPU
    return result


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--quick", action="store_true", help="one shape, fewer repeats")
    parser.add_argument("--device", default="cuda", help="cuda, or cpu to check the script itself")
    parser.add_argument("--smoke", action="store_true", help="a tiny shape (with --device cpu)")
    args = parser.parse_args()
    global DEVICE
    DEVICE = args.device
    shapes, tokens, repeats = (SHAPES[:1], TOKENS[:1], 5) if args.quick else (SHAPES, TOKENS, 20)
    r = R
    if args.smoke:
        shapes, tokens, repeats, r = [(128, 256)], [32], 3, 16
    device_name = torch.cuda.get_device_name() if DEVICE == "cuda" else "cpu"
    results = {"versions": {"torch": torch.__version__, "peft": peft.__version__, "gpu": device_name}}
    groups = [(f"{n}x{k}/T{t}/r{r}", n, k, t) for n, k in shapes for t in tokens]
    paths = ["peft-lora", "peft-bat", "peft-shared", "peft-mini"]

    def save():
        with open(args.out, "w") as f:
            json.dump(results, f, indent=1)

    # Eager first, for every shape, written as it goes; the CUDA graphs after, so that a
    # capture that fails (and may leave the device unusable) costs none of the eager numbers.
    for group, n, k, t in groups:
        results[group] = {}
        for path in paths:
            results[group][path] = m = measure(path, k, n, t, r, repeats)
            print(f"{group:24} {path:12} eager fwd {m['fwd_ms']:8.3f} ms  fwd+bwd {m['fwd_bwd_ms']:8.3f} ms  "
                  f"kept {m['kept_bytes'] / 2**20:8.1f} MiB  peak {m['peak_bytes'] / 2**20:8.1f} MiB", flush=True)
            save()
    if DEVICE != "cuda":
        return
    for group, n, k, t in groups:
        for path in paths:
            m = measure_graphed(path, k, n, t, r, repeats)
            results[group][path].update(m)
            graph = (f"fwd {m['fwd_graph_ms']:8.3f} ms  fwd+bwd {m['fwd_bwd_graph_ms']:8.3f} ms"
                     if "fwd_bwd_graph_ms" in m else f"failed: {m['graph_error']}")
            print(f"{group:24} {path:12} graphed {graph}", flush=True)
            save()


if __name__ == "__main__":
    main()
