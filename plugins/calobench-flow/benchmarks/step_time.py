"""Time one training step of flow_matching's layer transformer on lcd, side by side.

Three variants, interleaved step by step on the same batches (the machine's noise hits all alike):
  old:     per-cell head 16, cells encoded per step, tokens gathered and scattered (the 8cc1493 lcd record)
  no_head: the same without the per-cell head
  default: no head, the encoding's deterministic part precomputed, tokens read as a strided view
Prints the median seconds per step (forward, backward, AdamW) of each and the ratios.

    python plugins/calobench-flow/benchmarks/step_time.py [--steps 8] [--batch 64] [--width 192]
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

import calobench


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--width", type=int, default=192)
    ap.add_argument("--showers", type=int, default=256, help="simulated lcd showers the batches are drawn from")
    args = ap.parse_args()

    from calobench_flow.model import LayerVelocity
    from calobench_flow.representation import Representation

    sim = calobench.registry().simulators["lcd"]
    data = sim.simulate(args.showers, np.random.default_rng(0))
    energy = np.asarray(data.conditions["energy"])
    rep = Representation(sim.geometry(), sim.condition_ranges(), "total", 0.5)
    gen = torch.Generator().manual_seed(0)
    rep.fit(data.array(), energy, gen)
    showers = torch.as_tensor(data.array())
    e_feat, v_feat = rep.features(showers, energy)
    cond = torch.zeros(args.batch, 3)

    def variant(cell_head, strided, precomputed):
        torch.manual_seed(0)
        net = LayerVelocity(rep, 3, args.width, 4, 64, 4, cell_head)
        net.strided = strided and net.strided
        opt = torch.optim.AdamW(net.parameters(), 1e-3)

        def step():
            idx = torch.randint(0, len(showers), (args.batch,), generator=gen)
            x1 = (rep.dequantise(e_feat[idx], v_feat[idx], gen) if precomputed
                  else rep.encode(showers[idx], energy[idx.numpy()], gen))
            x0 = torch.randn_like(x1)
            t = torch.sigmoid(torch.randn(args.batch))
            loss = ((net((1 - t[:, None]) * x0 + t[:, None] * x1, t, cond) - (x1 - x0)) ** 2).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return step

    variants = {"old": variant(16, False, False), "no_head": variant(0, False, False),
                "default": variant(0, True, True)}
    for f in variants.values():  # warm-up
        f()
    times = {k: [] for k in variants}
    for _ in range(args.steps):
        for k, f in variants.items():
            t0 = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t0)
    med = {k: float(np.median(v)) for k, v in times.items()}
    print(f"lcd layer transformer, width {args.width}, batch {args.batch}, {args.steps} interleaved steps, "
          f"{torch.get_num_threads()} threads")
    for k, v in med.items():
        print(f"  {k:8s} {v:.3f} s a step   ({v / med['old']:.2f} x old)")
    print(f"  default / no_head: {med['default'] / med['no_head']:.2f}")


if __name__ == "__main__":
    main()
