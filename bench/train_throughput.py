"""Benchmark: training images/s of the plain eager fp32 NCHW step vs ablate's optimized step.

    python bench/train_throughput.py                     # CPU, small: 64x128 crops, batch 4
    python bench/train_throughput.py --device cuda --size 256x256 --steps 50 --compile on
    python bench/train_throughput.py --procs 2           # K concurrent processes vs one

Same process, same data, same batch: every variant trains its own copy of the model (same seed)
on the same stream of batches, drawn from a packed uint8 cache (``PackedSplit.from_arrays`` of
synthetic scenes) through ``runner.tasks.mtl.data.batches.train_batches``, so crops are sliced on the host
and normalisation runs on the device, exactly as in ``runner.tasks.mtl.train.train``. The step is
``runner.tasks.mtl.train._train_step`` with the levers of ``runner.tasks.mtl.train.FastPath``:

  plain       all levers off: eager, fp32, NCHW, per-parameter optimizer loop
  optimized   ``fast_path(TrainConfig(device=..., compile=...), device)``: what a trial runs
  + lever     plain plus that one lever            (--table add, the default)
  all - lever every lever that applies, minus one  (--table off)

Variants are timed in interleaved rounds (A B C A B C ...) after a warm-up, and the median round
is reported, so a machine shared with other jobs slows every variant alike. Losses stay on the
device (no host sync inside the step); CUDA is synchronised only around each timed round.
Compile time (the warm-up of a compiled variant) is printed separately.

``--procs K`` runs K processes at once (as ``ablate run --trials-per-gpu K`` does), each timing
the optimized step, and reports the aggregate images/s against one process alone.
"""
from __future__ import annotations

import argparse
import dataclasses
import multiprocessing as mp
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from runner.tasks.mtl.config import Config as TrainConfig  # noqa: E402
from models import build_model  # noqa: E402
from runner.tasks.mtl.data.batches import train_batches  # noqa: E402
from runner.tasks.mtl.data.packed import PackedSplit  # noqa: E402
from runner.tasks.mtl.data.synth import synthetic_split  # noqa: E402
from runner.tasks.mtl.train import FastPath, _train_step, fast_path, make_optimizer  # noqa: E402

MODELS = ("joint", "branched", "distillation")


# --- data ------------------------------------------------------------------------------------

def make_split(n: int, image: tuple[int, int], kind: str, seed: int = 0) -> PackedSplit:
    """A packed uint8 split of ``n`` synthetic scenes (or random arrays) of size ``image``."""
    h, w = image
    if kind == "random":
        rng = np.random.default_rng(seed)
        return PackedSplit.from_arrays(rng.integers(0, 256, (n, h, w, 3)),
                                       rng.integers(0, 19, (n, h, w)),
                                       rng.integers(1, 256, (n, h, w)))
    return synthetic_split(n, (h, w), seed=seed)


def batch_stream(split: PackedSplit, config: TrainConfig, device: torch.device, fast: FastPath):
    """Endless batches, epoch after epoch, exactly as ``train`` draws them."""
    epoch = 0
    while True:
        yield from train_batches(split, batch_size=config.batch_size, crop_size=config.crop_size,
                                 seed=config.seed, epoch=epoch, device=device,
                                 depth_unit=config.depth_unit, pin_memory=fast.pin_memory,
                                 channels_last=fast.channels_last)
        epoch += 1


# --- one variant -----------------------------------------------------------------------------

class Variant:
    """A model, its optimizer and its batch stream, set up with one FastPath like ``train`` does."""

    def __init__(self, name: str, fast: FastPath, config: TrainConfig, split: PackedSplit,
                 device: torch.device):
        self.name, self.fast, self.config, self.device = name, fast, config, device
        torch.backends.cudnn.benchmark = fast.cudnn_benchmark  # global: set again before each round
        torch.manual_seed(config.seed)
        self.model = build_model(config.to_model_config()).to(device)
        if fast.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.optimizer = make_optimizer(config, self.model, device, fast.fused_optimizer)
        self.forward = torch.compile(self.model) if fast.compile else self.model
        self.autocast = fast.autocast(device)
        self.batches = batch_stream(split, config, device, fast)
        self.model.train()
        self.rates: list[float] = []
        self.cpu_rates: list[float] = []  # images per CPU-second of this process
        self.warmup_s = 0.0

    def run(self, steps: int) -> float:
        """``steps`` training steps; returns their wall time (CUDA synchronised at both ends)."""
        torch.backends.cudnn.benchmark = self.fast.cudnn_benchmark
        sync(self.device)
        t, cpu = time.perf_counter(), time.process_time()
        for _ in range(steps):
            batch = next(self.batches)
            _train_step(self.forward, self.optimizer, batch, self.config, self.autocast,
                        self.fast.channels_last)
        sync(self.device)
        elapsed = time.perf_counter() - t
        self.cpu_s = time.process_time() - cpu
        return elapsed


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# --- lever table -----------------------------------------------------------------------------

def levers_for(device: torch.device, compile_on: bool) -> dict[str, dict]:
    """The levers that exist on ``device``: name -> FastPath fields it switches on."""
    levers = {"bf16 autocast": {"amp_dtype": torch.bfloat16},
              "channels_last": {"channels_last": True},
              "fused optimizer" if device.type == "cuda" else "foreach optimizer": {"fused_optimizer": True}}
    if device.type == "cuda":
        levers["cudnn.benchmark"] = {"cudnn_benchmark": True}
        levers["pinned memory"] = {"pin_memory": True}
    if compile_on:
        levers["torch.compile"] = {"compile": True}
    return levers


def variants_for(args, device: torch.device, config: TrainConfig) -> list[tuple[str, FastPath]]:
    compile_on = args.compile == "on"
    levers = levers_for(device, compile_on)
    plain = FastPath()
    everything = FastPath(**{k: v for fields in levers.values() for k, v in fields.items()})
    out = [("plain (eager fp32 NCHW)", plain),
           ("optimized (fast_path default)", fast_path(config, device))]
    if args.table in ("add", "both"):
        out += [(f"plain + {name}", dataclasses.replace(plain, **fields)) for name, fields in levers.items()]
    if args.table != "none":
        out.append(("all levers", everything))
    if args.table in ("off", "both"):
        off = {k: None if k == "amp_dtype" else False for fields in levers.values() for k in fields}
        out += [(f"all - {name}", dataclasses.replace(everything, **{k: off[k] for k in fields}))
                for name, fields in levers.items()]
    seen, unique = {}, []
    for name, fast in out:  # one measurement per distinct FastPath; aliases point to it
        if fast in seen:
            seen[fast].append(name)
        else:
            seen[fast] = [name]
            unique.append((name, fast))
    return [(" = ".join(seen[fast]), fast) for _, fast in unique]


def bench_model(args, architecture: str, device: torch.device, split: PackedSplit) -> list[dict]:
    config = TrainConfig(architecture=architecture, encoder=args.encoder, crop_size=args.crop,
                         batch_size=args.batch, device=str(device), compile=args.compile == "on")
    variants = []
    for name, fast in variants_for(args, device, config):
        v = Variant(name, fast, config, split, device)
        v.warmup_s = v.run(args.warmup)  # includes compilation for compiled variants
        variants.append(v)
    for _ in range(args.rounds):
        for v in variants:
            v.rates.append(args.steps * args.batch / v.run(args.steps))
            v.cpu_rates.append(args.steps * args.batch / v.cpu_s)
    base = statistics.median(variants[0].rates)
    cpu_base = statistics.median(variants[0].cpu_rates)
    rows = []
    for v in variants:
        rate, cpu_rate = statistics.median(v.rates), statistics.median(v.cpu_rates)
        rows.append({"model": architecture, "variant": v.name, "img_s": rate, "ratio": rate / base,
                     "img_cpu_s": cpu_rate, "cpu_ratio": cpu_rate / cpu_base,
                     "spread": (min(v.rates), max(v.rates)), "warmup_s": v.warmup_s})
    return rows


def print_rows(rows: list[dict], args) -> None:
    print(f"\n{'model':<13} {'variant':<44} {'img/s':>7} {'vs plain':>8} {'min..max':>13} "
          f"{'img/cpu-s':>9} {'vs plain':>8} {'warm-up s':>9}")
    for r in rows:
        lo, hi = r["spread"]
        print(f"{r['model']:<13} {r['variant']:<44} {r['img_s']:7.2f} {r['ratio']:7.2f}x "
              f"{lo:6.2f}..{hi:<6.2f} {r['img_cpu_s']:9.2f} {r['cpu_ratio']:7.2f}x {r['warmup_s']:9.1f}")
    print(f"\nload average now {os.getloadavg()[0]:.1f};", "median of", args.rounds, "interleaved rounds of", args.steps, "steps; warm-up",
          args.warmup, "steps (compile time included there)")
    print("img/cpu-s: images per CPU-second of this process (robust to other jobs on the machine;"
          " on CUDA it only measures the host side)")


# --- concurrent processes --------------------------------------------------------------------

def _proc_main(rank: int, args, device_name: str, threads: int, barrier, queue) -> None:
    torch.set_num_threads(threads)
    device = torch.device(device_name)
    split = make_split(args.n, args.image, args.data)
    config = TrainConfig(architecture=args.models[0], encoder=args.encoder, crop_size=args.crop,
                         batch_size=args.batch, device=device_name, compile=args.compile == "on",
                         seed=rank)
    v = Variant("optimized", fast_path(config, device), config, split, device)
    v.run(args.warmup)
    barrier.wait()
    start = time.time()
    elapsed = v.run(args.steps * args.rounds)
    queue.put((rank, start, start + elapsed, args.steps * args.rounds * args.batch, v.cpu_s))


def run_procs(args, k: int, device_name: str, threads: int) -> tuple[float, list[float], float]:
    ctx = mp.get_context("spawn")
    barrier, queue = ctx.Barrier(k), ctx.Queue()
    procs = [ctx.Process(target=_proc_main, args=(r, args, device_name, threads, barrier, queue))
             for r in range(k)]
    for p in procs:
        p.start()
    results = [queue.get() for _ in procs]
    for p in procs:
        p.join()
    span = max(r[2] for r in results) - min(r[1] for r in results)
    per = [r[3] / (r[2] - r[1]) for r in sorted(results)]
    per_cpu_s = sum(r[3] for r in results) / sum(r[4] for r in results)
    return sum(r[3] for r in results) / span, per, per_cpu_s


def bench_procs(args, device: torch.device) -> None:
    cores = os.cpu_count() or 1
    k = args.procs
    threads_one = args.threads or torch.get_num_threads()
    threads_k = args.threads or (max(1, cores // k) if device.type == "cpu" else threads_one)
    print(f"\n{args.models[0]}: optimized step, {k} concurrent processes vs 1 "
          f"(threads per process: 1 proc {threads_one}, {k} procs {threads_k})")
    one, _, one_cpu = run_procs(args, 1, str(device), threads_one)
    agg, per, agg_cpu = run_procs(args, k, str(device), threads_k)
    print(f"  1 process      {one:8.2f} img/s              {one_cpu:8.2f} img/cpu-s")
    print(f"  {k} processes    {agg:8.2f} img/s aggregate    {agg_cpu:8.2f} img/cpu-s  (per process: "
          f"{', '.join(f'{p:.2f}' for p in per)} img/s)")
    print(f"  ratio          {agg / one:8.2f}x                {agg_cpu / one_cpu:8.2f}x")
    print(f"  load average {os.getloadavg()[0]:.1f}: on a shared machine each process gets its own"
          f" share of the cores, so the wall ratio there overstates what K trials gain")


# --- main ------------------------------------------------------------------------------------

def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default=",".join(MODELS), help="comma-separated architectures")
    ap.add_argument("--encoder", default="resnet34")
    ap.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 ...")
    ap.add_argument("--size", default="64x128", help="training crop HxW")
    ap.add_argument("--image", default=None, help="packed image HxW (default 1.5x the crop)")
    ap.add_argument("--n", type=int, default=16, help="images in the packed split")
    ap.add_argument("--data", choices=("synth", "random"), default="synth")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--steps", type=int, default=3, help="steps per timed round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--table", choices=("add", "off", "both", "none"), default="add",
                    help="per-lever rows: plain + one lever (add), all levers - one (off)")
    ap.add_argument("--compile", choices=("on", "off"), default="off",
                    help="include torch.compile (minutes of compile time per variant on a CPU)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (per process)")
    ap.add_argument("--procs", type=int, default=0, help="also run K concurrent processes")
    args = ap.parse_args(argv)
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    args.crop = tuple(int(x) for x in args.size.lower().split("x"))
    args.image = (tuple(int(x) for x in args.image.lower().split("x")) if args.image
                  else tuple(c * 3 // 2 for c in args.crop))
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                     if line.startswith("model name")), platform.processor()) \
            if Path("/proc/cpuinfo").exists() else platform.processor()
    print(f"torch {torch.__version__} | device {device} ({name}) | threads {torch.get_num_threads()}"
          f" | cores {os.cpu_count()} | cpu bf16 native: {torch.ops.mkldnn._is_mkldnn_bf16_supported()}"
          f" | load average {os.getloadavg()[0]:.1f}")
    print(f"encoder {args.encoder}, ASPP + deeplabv3p | crop {args.crop[0]}x{args.crop[1]} from "
          f"{args.n} packed {args.data} images {args.image[0]}x{args.image[1]} | batch {args.batch}")
    split = make_split(args.n, args.image, args.data)
    if args.table != "none" or not args.procs:
        rows = []
        for arch in args.models:
            model_rows = bench_model(args, arch, device, split)
            print_rows(model_rows, args)
            rows += model_rows
        print("\nsummary: optimized / plain")
        for r in rows:
            if "optimized" in r["variant"]:
                print(f"  {r['model']:<13} plain {r['img_s'] / r['ratio']:7.2f}"
                      f" img/s  optimized {r['img_s']:7.2f} img/s  ratio {r['ratio']:.2f}x")
    if args.procs:
        bench_procs(args, device)


if __name__ == "__main__":
    main()
