"""Seconds per training step of the ``airshower_refiner`` default (10 critic steps and one refiner step), with
the trace networks skipping the dark stations (``over_stations``, the code) and with every station through
the convolutions (dense), alternating in one process so that both see the same machine. Each figure: the
default's own ``fit`` on its 20 000 training events of simulation and data, timed from its 5th logged step
over the next ``--steps``.

    python plugins/calobench-airshower/benchmarks/refiner_speed.py [--steps 25] [--rounds 2]
"""
from __future__ import annotations

import argparse
import time

import torch

import calobench
import calobench_airshower.nets as nets
from calobench_airshower.models import AirshowerRefiner

SKIP = 5  # logged steps before the clock starts (first-call allocations)


class _Done(Exception):
    pass


def seconds_per_step(variant: str, source, target, info, steps: int) -> float:
    evaluate = nets.over_stations if variant == "over_stations" else (lambda net, flat: net(flat))
    original = nets.over_stations
    nets.over_stations = evaluate
    try:
        torch.manual_seed(0)
        model = AirshowerRefiner(info, {**AirshowerRefiner.config_for("default"), "warmup": 0}, torch.device("cpu"))
        trainer = calobench.Trainer(progress=False, seed=0)
        trainer.bind(model)
        log, logged, start = trainer.log, [0], [0.0]

        def timed_log(**values):
            logged[0] += 1
            if logged[0] == SKIP:
                start[0] = time.perf_counter()
            if logged[0] == SKIP + steps:
                raise _Done
            return log(**values)

        trainer.log = timed_log
        try:
            model.fit(source, trainer, target=target)
        except _Done:
            pass
        return (time.perf_counter() - start[0]) / steps
    finally:
        nets.over_stations = original


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    sim = calobench.load_dataset("airshower_sim")
    n = AirshowerRefiner.config_for("default")["n_train"]
    source, target = sim.load("train").head(n), calobench.load_dataset("airshower").load("train").head(n)
    print(f"torch threads {torch.get_num_threads()}; seconds per refiner step (10 critic steps + 1), "
          f"steps {SKIP}-{SKIP + args.steps} of the default's fit")
    for r in range(args.rounds):
        times = {v: seconds_per_step(v, source, target, sim.info, args.steps) for v in ("over_stations", "dense")}
        print(f"round {r}: over_stations {times['over_stations']:.3f} s, dense {times['dense']:.3f} s, "
              f"dense / over_stations {times['dense'] / times['over_stations']:.2f}", flush=True)


if __name__ == "__main__":
    main()
