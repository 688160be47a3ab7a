#!/usr/bin/env python3
"""PyTorch reference timings for NoProp's blocks (docs/algorithm.md, section 7).

Measures, at a given batch size on MNIST shapes (1x28x28, 10 classes, one-hot
embeddings d = 10), the same things as `cargo xtask bench` measures for
noprop-rs, and prints one JSON object (also written to --json):

  dt_train_step       DT block: forward, loss, backward, AdamW step
  dt_forward          DT block, eval mode, no grad
  ctfm_train_step     CT/FM block: forward, loss, backward, AdamW step
  ctfm_forward        CT/FM block, eval mode, no grad
  ctfm_cached_step    one CT/FM inference step with the image features cached
                      (latent + time + fusion MLP and one Euler update)
  conv_stack_fwd_bwd  the three image convolutions (ReLU, pooling, no
                      dropout): forward and backward of sum(y * r)
  dt_minibatch        all T = 10 DT blocks stepped on one minibatch (the
                      epoch's unit of work: an epoch is 469 of these)
  fm_eval, ct_eval    the whole inference of --eval-images images (batches of
                      500, one run, --eval-steps Euler steps): image features
                      once per batch, then every step the block's latent,
                      time and fusion layers on the whole batch (CT: its
                      learned schedule evaluated at the step's time, the
                      probability-flow drift), the read-out
  dt_eval             the same for NoProp-DT: T = 10 blocks, posterior mixing
                      with injected noise, softmax(head(z_T))

Times are medians in milliseconds over --iters runs after --warmup runs;
cpu_ms is the mean process CPU time (all threads) per run.
The modules are written from the spec, not taken from any tutorial; their
parameter counts (919,946 and 867,722) are checked at start-up.

Usage: python3 bench/torch_blocks.py [--batch 128] [--threads 2] [--iters 20]
"""

import argparse
import json
import math
import statistics
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

IMAGE, CLASSES, LATENT, T_BLOCKS = 28, 10, 10, 10
DROPOUT = 0.2
TIME_DIM = 64


class ConvBranch(nn.Module):
    """conv32-ReLU-pool-drop, conv64-ReLU-drop, conv128-ReLU-pool-drop, flatten."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3)
        self.conv2 = nn.Conv2d(32, 64, 3)
        self.conv3 = nn.Conv2d(64, 128, 3)
        self.drop = nn.Dropout(DROPOUT)

    def forward(self, x):
        x = self.drop(F.max_pool2d(F.relu(self.conv1(x)), 2))
        x = self.drop(F.relu(self.conv2(x)))
        x = self.drop(F.max_pool2d(F.relu(self.conv3(x)), 2))
        return x.flatten(1)


class DtBlock(nn.Module):
    def __init__(self):
        super().__init__()
        self.convs = ConvBranch()
        self.img_fc = nn.Linear(2048, 256)
        self.img_bn = nn.BatchNorm1d(256)
        self.l1, self.b1 = nn.Linear(LATENT, 256), nn.BatchNorm1d(256)
        self.l2, self.b2 = nn.Linear(256, 256), nn.BatchNorm1d(256)
        self.l3, self.b3 = nn.Linear(256, 256), nn.BatchNorm1d(256)
        self.f1, self.fb1 = nn.Linear(512, 256), nn.BatchNorm1d(256)
        self.f2, self.fb2 = nn.Linear(256, 128), nn.BatchNorm1d(128)
        self.out = nn.Linear(128, CLASSES)

    def forward(self, x, z):
        h = self.img_bn(self.img_fc(self.convs(x)))
        h1 = F.relu(self.b1(self.l1(z)))
        h2 = F.relu(self.b2(self.l2(h1)))
        l = self.b3(self.l3(h2)) + h1
        f = F.relu(self.fb1(self.f1(torch.cat([h, l], 1))))
        f = F.relu(self.fb2(self.f2(f)))
        return self.out(f)


def time_embedding(t):
    """64-dim sinusoidal embedding of 1000 t."""
    half = TIME_DIM // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32) / half)
    a = 1000.0 * t[:, None] * freqs[None, :]
    return torch.cat([torch.sin(a), torch.cos(a)], 1)


class CtFmBlock(nn.Module):
    def __init__(self):
        super().__init__()
        self.convs = ConvBranch()
        self.img_fc = nn.Linear(2048, 256)
        self.lat_fc = nn.Linear(LATENT, 256)
        self.time_fc = nn.Linear(TIME_DIM, 256)
        self.f1 = nn.Linear(768, 256)
        self.f2 = nn.Linear(256, 128)
        self.out = nn.Linear(128, CLASSES)

    def image_features(self, x):
        return F.relu(self.img_fc(self.convs(x)))

    def from_features(self, h, z, t):
        l = F.relu(self.lat_fc(z))
        e = F.relu(self.time_fc(time_embedding(t)))
        f = F.relu(self.f1(torch.cat([h, l, e], 1)))
        return self.out(F.relu(self.f2(f)))

    def forward(self, x, z, t):
        return self.from_features(self.image_features(x), z, t)


class LearnedSchedule(nn.Module):
    """The CT schedule (docs/algorithm.md, section 3), H sigmoid units."""

    def __init__(self, hidden=1024):
        super().__init__()
        raw_one = math.log(math.e - 1.0)  # softplus^-1(1)
        self.hidden = hidden
        self.gamma_0 = nn.Parameter(torch.tensor([-math.log(99.0)]))
        self.gamma_1 = nn.Parameter(torch.tensor([math.log(99.0)]))
        self.skip_raw = nn.Parameter(torch.full((1,), raw_one))
        self.w_raw = nn.Parameter(torch.randn(hidden))
        self.b = nn.Parameter(torch.rand(hidden) * 4.0 - 2.0)
        self.v_raw = nn.Parameter(torch.full((hidden,), raw_one))

    def drift_terms(self, t):
        """(-gamma'(t) / 2, alpha_bar(t)) at one time t, from one network
        evaluation at t and the two ends."""
        ts = torch.tensor([t, 0.0, 1.0])
        skip, w, v = F.softplus(self.skip_raw), F.softplus(self.w_raw), F.softplus(self.v_raw)
        sig = torch.sigmoid(ts[:, None] * w + self.b)
        g = ts * skip + sig @ v / self.hidden
        g_prime = skip + (sig * (1 - sig) * w) @ v / self.hidden
        span, g_range = self.gamma_1 - self.gamma_0, g[2] - g[1]
        gamma = self.gamma_0 + span * (1 - (g[0] - g[1]) / g_range)
        gamma_prime = -span * g_prime[0] / g_range
        return -0.5 * gamma_prime, torch.sigmoid(-gamma)


def dt_posterior_coefficients(T=T_BLOCKS, clip=0.9999, o=0.008):
    """a_t, b_t, c_t of the clipped, reversed cosine schedule, t = 1..T."""
    f = lambda s: math.cos((s / T + o) / (1 + o) * math.pi / 2) ** 2
    ab = [min(f(T - t) / f(0), clip) for t in range(T + 1)]
    out = []
    for t in range(1, T + 1):
        alpha = ab[t - 1] / ab[t]
        a = math.sqrt(ab[t]) * (1 - alpha) / (1 - ab[t - 1])
        b = math.sqrt(alpha) * (1 - ab[t]) / (1 - ab[t - 1])
        c = (1 - ab[t]) * (1 - alpha) / (1 - ab[t - 1])
        out.append((a, b, c))
    return out


def fm_evaluate(block, W, images, steps, batch=500):
    """Euler on dz/dt = block(x, z, t) W from z_0 ~ N(0, I); the nearest class."""
    out, h = [], 1.0 / steps
    for x in images.split(batch):
        f = block.image_features(x)
        z = torch.randn(x.shape[0], W.shape[1])
        for i in range(steps):
            t = torch.full((x.shape[0],), i * h)
            z = z + h * (block.from_features(f, z, t) @ W)
        out.append(F.softmax(-torch.cdist(z, W) ** 2, 1))
    return torch.cat(out)


def ct_evaluate(block, schedule, head, W, images, steps, batch=500):
    """Euler on the probability-flow ODE (-gamma'/2)(sqrt(ab) u_hat - ab z)."""
    out, h = [], 1.0 / steps
    for x in images.split(batch):
        f = block.image_features(x)
        z = torch.randn(x.shape[0], W.shape[1])
        for i in range(steps):
            rate, ab = schedule.drift_terms(i * h)
            t = torch.full((x.shape[0],), i * h)
            u_hat = F.softmax(block.from_features(f, z, t), 1) @ W
            z = z + h * (rate * (ab.sqrt() * u_hat - ab * z))
        out.append(F.softmax(head(z), 1))
    return torch.cat(out)


def dt_evaluate(blocks, head, W, images, batch=500):
    """Eq. 3: z_t = a_t u_hat_t + b_t z_{t-1} + sqrt(c_t) eps; softmax(head(z_T))."""
    coeffs, out = dt_posterior_coefficients(len(blocks)), []
    for x in images.split(batch):
        z = torch.randn(x.shape[0], W.shape[1])
        for block, (a, b, c) in zip(blocks, coeffs):
            u_hat = F.softmax(block(x, z), 1) @ W
            z = a * u_hat + b * z + math.sqrt(c) * torch.randn_like(z)
        out.append(F.softmax(head(z), 1))
    return torch.cat(out)


def n_params(m):
    return sum(p.numel() for p in m.parameters())


def median_ms(fn, warmup, iters):
    """Median wall time and mean process CPU time (all threads), in ms."""
    for _ in range(warmup):
        fn()
    samples = []
    cpu0 = time.process_time()
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1e3)
    cpu_ms = (time.process_time() - cpu0) * 1e3 / iters
    return {"median_ms": statistics.median(samples), "cpu_ms": cpu_ms, "samples": len(samples)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--eval-images", type=int, default=500, help="images of the *_eval measurements")
    ap.add_argument("--eval-steps", type=int, default=1000, help="ODE steps of fm_eval and ct_eval")
    ap.add_argument("--eval-iters", type=int, default=3, help="timed runs of the *_eval measurements")
    ap.add_argument("--only", default="", help="comma-separated measurement names")
    ap.add_argument("--json", default="", help="also write the result here")
    args = ap.parse_args()
    if args.batch < 2 or args.threads < 1 or args.iters < 1:
        sys.exit("need --batch >= 2 (BatchNorm), --threads >= 1, --iters >= 1")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    only = set(filter(None, args.only.split(",")))
    want = lambda name: not only or name in only

    B = args.batch
    x = torch.randn(B, 1, IMAGE, IMAGE)
    y = torch.randint(0, CLASSES, (B,))
    W = torch.eye(CLASSES)  # one-hot embeddings, fixed
    u = W[y]
    head = nn.Linear(LATENT, CLASSES)

    dt = DtBlock()
    ctfm = CtFmBlock()
    assert n_params(dt) == 919_946, n_params(dt)
    assert n_params(ctfm) == 867_722, n_params(ctfm)

    def dt_step_fn(block, opt):
        def step():
            # z_{t-1} ~ N(sqrt(ab) u_y, (1 - ab) I); loss of Eq. 8 (one-hot W).
            z = 0.7 * u + 0.7 * torch.randn(B, LATENT)
            zT = 0.99 * u + 0.1 * torch.randn(B, LATENT)
            u_hat = F.softmax(block(x, z), 1) @ W
            loss = 5.0 * ((u_hat - u) ** 2).sum(1).mean() + F.cross_entropy(head(zT), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return step

    results = {}
    if want("conv_stack_fwd_bwd"):
        convs = ConvBranch()
        convs.eval()  # no dropout
        upstream = torch.randn(B, 2048)

        def stack_fwd_bwd():
            convs.zero_grad(set_to_none=True)
            (convs(x) * upstream).sum().backward()

        results["conv_stack_fwd_bwd"] = median_ms(stack_fwd_bwd, args.warmup, args.iters)
    dt_opt = torch.optim.AdamW(list(dt.parameters()) + list(head.parameters()), lr=1e-3, weight_decay=1e-3)
    if want("dt_train_step"):
        dt.train()
        results["dt_train_step"] = median_ms(dt_step_fn(dt, dt_opt), args.warmup, args.iters)
    if want("dt_forward"):
        dt.eval()
        z = torch.randn(B, LATENT)
        with torch.no_grad():
            results["dt_forward"] = median_ms(lambda: dt(x, z), args.warmup, args.iters)

    ctfm_opt = torch.optim.AdamW(ctfm.parameters(), lr=1e-3, weight_decay=1e-3)
    if want("ctfm_train_step"):
        ctfm.train()

        def ctfm_step():
            # Flow matching (Eq. 11): z_t = t u + (1 - t) z0, target u - z0.
            z0 = torch.randn(B, LATENT)
            t = torch.rand(B)
            zt = t[:, None] * u + (1 - t[:, None]) * z0
            v_hat = ctfm(x, zt, t) @ W
            loss = ((v_hat - (u - z0)) ** 2).sum(1).mean()
            ctfm_opt.zero_grad(set_to_none=True)
            loss.backward()
            ctfm_opt.step()

        results["ctfm_train_step"] = median_ms(ctfm_step, args.warmup, args.iters)
    if want("ctfm_forward") or want("ctfm_cached_step"):
        ctfm.eval()
        z = torch.randn(B, LATENT)
        t = torch.full((B,), 0.5)
        with torch.no_grad():
            if want("ctfm_forward"):
                results["ctfm_forward"] = median_ms(lambda: ctfm(x, z, t), args.warmup, args.iters)
            if want("ctfm_cached_step"):
                h = ctfm.image_features(x)
                dt_ = 1.0 / 1000

                def cached_step():
                    v = ctfm.from_features(h, z, t) @ W
                    return z + dt_ * v

                results["ctfm_cached_step"] = median_ms(cached_step, args.warmup, 10 * args.iters)
    if want("dt_minibatch"):
        blocks = [DtBlock() for _ in range(T_BLOCKS)]
        steps = []
        for blk in blocks:
            blk.train()
            opt = torch.optim.AdamW(list(blk.parameters()) + list(head.parameters()), lr=1e-3, weight_decay=1e-3)
            steps.append(dt_step_fn(blk, opt))
        iters = max(1, args.iters // T_BLOCKS)
        results["dt_minibatch"] = median_ms(lambda: [s() for s in steps], 1, iters)

    evals = [n for n in ("fm_eval", "ct_eval", "dt_eval") if want(n)]
    if evals:
        images = torch.randn(args.eval_images, 1, IMAGE, IMAGE)
        ctfm.eval()
        with torch.no_grad():
            for name in evals:
                if name == "fm_eval":
                    fn = lambda: fm_evaluate(ctfm, W, images, args.eval_steps)
                elif name == "ct_eval":
                    schedule, ct_head = LearnedSchedule(), nn.Linear(LATENT, CLASSES)
                    fn = lambda: ct_evaluate(ctfm, schedule, ct_head, W, images, args.eval_steps)
                else:
                    blocks = [DtBlock().eval() for _ in range(T_BLOCKS)]
                    fn = lambda: dt_evaluate(blocks, head, W, images)
                m = median_ms(fn, 0, args.eval_iters)
                m["images"] = args.eval_images
                m["ms_per_image"] = m["median_ms"] / args.eval_images
                if name != "dt_eval":
                    m["steps"] = args.eval_steps
                results[name] = m

    out = {
        "implementation": "pytorch",
        "torch_version": torch.__version__,
        "threads": args.threads,
        "batch": B,
        "measurements": results,
    }
    text = json.dumps(out, indent=2)
    print(text)
    if args.json:
        with open(args.json, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
