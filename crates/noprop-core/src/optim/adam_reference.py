# Reference values for noprop-core's Adam/AdamW test, following the algorithm
# boxes of the torch.optim.Adam and torch.optim.AdamW documentation (pure python floats).
import math
def run(decoupled):
    b1, b2, eps = 0.9, 0.999, 1e-8
    P = {"a": [0.5, -1.0, 2.0], "b": [1.5, -0.25], "c": [3.0]}
    hyper = {"a": (0.01, 0.1), "b": (0.05, 0.0), "c": (0.05, 0.0)}
    st = {k: None for k in P}
    wa = [1.0, 2.0, 3.0]
    for k in range(1, 6):
        grads = {"a": [2 * w * x for w, x in zip(wa, P["a"])], "b": [math.cos(x) for x in P["b"]]}
        if k % 2 == 0:
            grads["c"] = [2 * P["c"][0]]
        for n, g in grads.items():
            lr, wd = hyper[n]
            th = P[n]
            if st[n] is None:
                st[n] = [0, [0.0] * len(th), [0.0] * len(th)]
            s = st[n]
            s[0] += 1
            t = s[0]
            if decoupled:
                th = [x - lr * wd * x for x in th]
            else:
                g = [gi + wd * x for gi, x in zip(g, th)]
            s[1] = [b1 * m + (1 - b1) * gi for m, gi in zip(s[1], g)]
            s[2] = [b2 * v + (1 - b2) * gi * gi for v, gi in zip(s[2], g)]
            mh = [m / (1 - b1 ** t) for m in s[1]]
            vh = [v / (1 - b2 ** t) for v in s[2]]
            P[n] = [x - lr * m / (math.sqrt(v) + eps) for x, m, v in zip(th, mh, vh)]
    return P, st
for dec in (False, True):
    P, st = run(dec)
    print("AdamW" if dec else "Adam", {k: [repr(x) for x in v] for k, v in P.items()})
    print("  state a", st["a"][0], [repr(x) for x in st["a"][1]], [repr(x) for x in st["a"][2]])
    print("  state c", st["c"][0])
