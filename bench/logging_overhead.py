"""MLflow logging overhead: plain per-call `MlflowClient.log_metric` vs ablate's tracker (the run
`MLflowTracker.open_run` returns, an `MLflowRun`).

    python bench/logging_overhead.py [--points 2000] [--step-ms 100]

Both write into fresh SQLite stores in a temp dir (store creation is not timed). Part 1 logs the
same N points both ways and prints the blocking time per call, the wall time including the final
flush, and points/s. Part 2 runs a simulated trial (epochs x steps, a few loss metrics per step
and a block of metrics per epoch) through MLflowRun for real, back to back with no training in
between (the worst case for the background thread), and compares the time the training thread
was blocked with the assumed training time (`--step-ms` per step). The plain-client figure for
part 2 is extrapolated from part 1's mean per point (running it would take minutes).
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _stats_ms(durations: list[float]) -> tuple[float, float, float]:
    s = sorted(durations)
    p99 = s[min(len(s) - 1, int(round(0.99 * (len(s) - 1))))]
    return statistics.fmean(s) * 1e3, p99 * 1e3, s[-1] * 1e3


def bench_plain(uri: str, points: int) -> tuple[list[float], float]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    exp = client.create_experiment("plain")
    run_id = client.create_run(exp, run_name="plain").info.run_id
    durations = []
    t_start = time.perf_counter()
    for i in range(points):
        t0 = time.perf_counter()
        client.log_metric(run_id, "loss", 1.0 / (i + 1), step=i, synchronous=True)
        durations.append(time.perf_counter() - t0)
    wall = time.perf_counter() - t_start
    client.set_terminated(run_id)
    assert len(client.get_metric_history(run_id, "loss")) == points
    return durations, wall


def open_run(uri: str, experiment: str, flush_interval_s: float):
    """A run as the worker opens one: the store prepared first (not timed), as `ablate run` does."""
    from runner.tracking.mlflow_tracker import MLflowTracker

    tracker = MLflowTracker(uri, experiment, flush_interval_s=flush_interval_s)
    tracker.prepare()
    return tracker.open_run(run_id=None, name=experiment, tags={}, params={})


def bench_tracker(uri: str, points: int, flush_interval_s: float) -> tuple[list[float], float, float]:
    from mlflow.tracking import MlflowClient

    run = open_run(uri, "tracker", flush_interval_s)
    durations = []
    t_start = time.perf_counter()
    for i in range(points):
        t0 = time.perf_counter()
        run.log_metrics({"loss": 1.0 / (i + 1)}, step=i)
        durations.append(time.perf_counter() - t0)
    t_flush = time.perf_counter()
    run.flush()
    wall = time.perf_counter() - t_start
    flush_s = time.perf_counter() - t_flush
    run.finish()
    assert len(MlflowClient(uri).get_metric_history(run.run_id, "loss")) == points
    return durations, wall, flush_s


def simulated_trial(uri: str, args) -> dict:
    """A whole trial through MLflowRun, time-compressed: each training step is a sleep of
    `sim_step_ms` (like a GPU step, it releases the GIL) and the flush interval is compressed by
    the same factor, so each background batch holds as many points as in the real trial."""
    from mlflow.tracking import MlflowClient

    scale = args.sim_step_ms / args.step_ms
    run = open_run(uri, "trial", args.flush_interval * scale)
    step_keys = [f"train/loss_{j}" for j in range(args.step_metrics)]
    epoch_keys = [f"val/metric_{j}" for j in range(args.epoch_metrics)]
    blocked = []
    cpu0, thread0 = time.process_time(), time.thread_time()
    t_start = time.perf_counter()
    step = 0
    for epoch in range(args.epochs):
        for _ in range(args.steps_per_epoch):
            time.sleep(args.sim_step_ms / 1e3)  # the training step
            t0 = time.perf_counter()
            run.log_metrics({k: 0.5 for k in step_keys}, step=step)
            blocked.append(time.perf_counter() - t0)
            step += 1
        t0 = time.perf_counter()
        run.log_metrics({k: 0.25 for k in epoch_keys}, step=step)
        blocked.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    run.finish()  # the end-of-trial drain blocks the worker
    final_flush = time.perf_counter() - t0
    wall = time.perf_counter() - t_start
    # CPU the background thread spent writing (process CPU minus the training thread's own).
    background_cpu = (time.process_time() - cpu0) - (time.thread_time() - thread0)
    client = MlflowClient(uri)
    n_points = sum(len(client.get_metric_history(run.run_id, k)) for k in step_keys + epoch_keys)
    return dict(
        points=n_points, blocked=blocked, final_flush=final_flush, wall=wall,
        # not rescaled: the number of batches (and their size) is the same as at full speed
        background_cpu=background_cpu, flush_interval=args.flush_interval * scale,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--points", type=int, default=2000, help="points logged each way in part 1")
    ap.add_argument("--step-ms", type=float, default=100.0, help="assumed training step time (ms)")
    ap.add_argument("--epochs", type=int, default=16)
    ap.add_argument("--steps-per-epoch", type=int, default=250)
    ap.add_argument("--step-metrics", type=int, default=3, help="metrics logged every step")
    ap.add_argument("--epoch-metrics", type=int, default=30, help="metrics logged once per epoch")
    ap.add_argument("--flush-interval", type=float, default=2.0, help="the run writer's flush_interval_s")
    ap.add_argument("--sim-step-ms", type=float, default=2.0,
                    help="sleep per step in the time-compressed simulated trial (part 2)")
    args = ap.parse_args()
    args.sim_step_ms = min(args.sim_step_ms, args.step_ms)

    import mlflow
    import sqlalchemy

    logging.getLogger("mlflow").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)

    print(f"mlflow {mlflow.__version__}, sqlalchemy {sqlalchemy.__version__}, "
          f"sqlite {__import__('sqlite3').sqlite_version}, python {sys.version.split()[0]}")
    with tempfile.TemporaryDirectory(prefix="ablate-bench-") as tmp:
        uri_plain = f"sqlite:///{tmp}/plain.db"
        uri_tracker = f"sqlite:///{tmp}/tracker.db"
        plain, plain_wall = bench_plain(uri_plain, args.points)
        trk, trk_wall, trk_flush = bench_tracker(uri_tracker, args.points, args.flush_interval)
        trial = simulated_trial(uri_tracker, args)

    n = args.points
    pm, p99, pmax = _stats_ms(plain)
    tm, t99, tmax = _stats_ms(trk)
    print(f"\n== part 1: {n} points, one metric per call, fresh SQLite stores ==")
    print(f"{'':34}{'MlflowClient.log_metric':>26}{'MLflowRun.log_metrics':>26}{'ratio':>10}")
    print(f"{'blocking per call, mean (ms)':34}{pm:26.4f}{tm:26.4f}{pm / tm:9.0f}x")
    print(f"{'blocking per call, p99 (ms)':34}{p99:26.4f}{t99:26.4f}{p99 / t99:9.0f}x")
    print(f"{'blocking per call, max (ms)':34}{pmax:26.4f}{tmax:26.4f}{pmax / tmax:9.0f}x")
    print(f"{'wall incl. final flush (s)':34}{plain_wall:26.3f}{trk_wall:26.3f}{plain_wall / trk_wall:9.1f}x")
    print(f"{'  of which final flush (s)':34}{'-':>26}{trk_flush:26.3f}")
    print(f"{'points/s (wall incl. flush)':34}{n / plain_wall:26.0f}{n / trk_wall:26.0f}")

    steps = args.epochs * args.steps_per_epoch
    train_s = steps * args.step_ms / 1e3
    points = args.epochs * (args.steps_per_epoch * args.step_metrics + args.epoch_metrics)
    plain_block = points * pm / 1e3  # one log_metric per point, extrapolated from part 1
    calls = trial["blocked"]
    trk_block = sum(calls) + trial["final_flush"]
    cm, c99, cmax = _stats_ms(calls)
    print(f"\n== part 2: simulated trial: {args.epochs} epochs x {args.steps_per_epoch} steps, "
          f"{args.step_metrics} metrics/step + {args.epoch_metrics}/epoch = {points} points ==")
    print(f"assumed training step time: {args.step_ms:g} ms -> {train_s:.1f} s of training per trial")
    print(f"plain log_metric (extrapolated, {pm:.3f} ms x {points} points): "
          f"{plain_block:8.3f} s blocked = {100 * plain_block / train_s:7.3f} % overhead")
    print(f"MLflowRun (measured, {len(calls)} calls, {trial['points']} points read back): "
          f"{trk_block:8.3f} s blocked = {100 * trk_block / train_s:7.3f} % overhead")
    print(f"  measured time-compressed x{args.step_ms / args.sim_step_ms:g}: {args.sim_step_ms:g} ms sleep "
          f"per step, flush interval {trial['flush_interval'] * 1e3:g} ms (= {args.flush_interval:g} s "
          f"at full speed), trial wall {trial['wall']:.1f} s")
    print(f"  log_metrics calls: {sum(calls) * 1e3:.1f} ms total; per call mean {cm * 1e3:.1f} us, "
          f"p99 {c99 * 1e3:.1f} us, max {cmax:.3f} ms; final drain in finish(): {trial['final_flush'] * 1e3:.1f} ms")
    print(f"  background writer thread CPU: {trial['background_cpu']:.3f} s per full-speed trial "
          f"= {100 * trial['background_cpu'] / train_s:.3f} % of the training time "
          f"(runs beside training; costs wall time only if training holds the GIL)")
    print(f"  ratio plain (extrapolated from part 1) / MLflowRun (measured) blocked time: "
          f"{plain_block / trk_block:.0f}x")

if __name__ == "__main__":
    main()
