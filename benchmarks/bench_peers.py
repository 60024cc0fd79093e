"""bnn_mcmc against its peers: Pyro, NumPyro and the original hypnettorch samplers.

Every sampler sees the same data, network, prior, likelihood, starting points and
float32 arithmetic, one CPU thread each:

* ``reg``   — 1-D regression with a gap (:func:`bnn_mcmc.datasets.regression_gap`,
  40 points), MLP 1-50-50-1 tanh, N(0, 1) prior, Gaussian noise 0.1;
* ``moons`` — two moons (:func:`bnn_mcmc.datasets.two_moons`, 200 points, noise 0.2),
  MLP 2-32-32-2 tanh, N(0, 1) prior, categorical likelihood;
* ``gauss`` — 100-D Gaussian, standard deviations log-spaced 0.01 … 1.

The potential is written once in torch (ours, Pyro and hypnettorch call the same
function) and once in JAX (NumPyro).  Pyro and NumPyro NUTS get ``potential_fn`` with
their own warmup (step size and diagonal mass matrix); hypnettorch has no adaptation, so
its samplers get the step size and diagonal inverse mass that *our* warmup found and
start from our first posterior draw (oracle tuning, in their favour; compare them on the
"ESS(f)/s sampling" column); their NUTS draws a tenth as many states (it has no tree-depth
cap: thousands of gradients per transition on the BNNs).  The other NUTS
trees are capped at the same depth for all.

Reported per run: warmup and sampling wall time (NumPyro: compilation measured
separately and included in warmup), gradient evaluations (warmup + sampling), µs per
gradient, bulk ESS of the potential U and (min over inputs) of predictions, ESS per
second of total time and per gradient, and for the Gaussian the largest errors of the
estimated means and standard deviations in units of the true standard deviation.

Run ``python benchmarks/bench_peers.py`` (``--quick`` for a smoke test); it writes
``benchmarks/results/peers.md`` (the table) and ``benchmarks/results/peers.png``.
"""

from __future__ import annotations

import argparse
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import arviz as az  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from bnn_mcmc import HMC, NUTS  # noqa: E402
from bnn_mcmc.datasets import Dataset, regression_gap, two_moons  # noqa: E402
from bnn_mcmc.multichain import MultiChainHMC  # noqa: E402

RESULTS = Path(__file__).parent / "results"


# --------------------------------------------------------------------- problems
@dataclass
class Problem:
    """A potential in torch and JAX, starts, and the quantities whose ESS we report."""

    name: str
    dim: int
    u_torch: object
    pred_torch: object  # (S, dim) -> (S, k) predictions whose ESS is reported
    u_jax: object
    starts: np.ndarray  # (4, dim) float32
    max_tree_depth: int
    hmc_steps: int
    true_std: np.ndarray | None = None


def _layer_sizes(widths):
    shapes = []
    for a, b in zip(widths[:-1], widths[1:]):
        shapes += [(b, a), (b,)]
    return shapes


def _torch_mlp(shapes):
    sizes = [math.prod(s) for s in shapes]

    def forward(w, x):  # w: (..., dim); x: (n, d)
        parts = torch.split(w, sizes, dim=-1)
        h = x
        for i in range(0, len(shapes), 2):
            wt = parts[i].reshape(*w.shape[:-1], *shapes[i])
            b = parts[i + 1].reshape(*w.shape[:-1], 1, shapes[i + 1][0])
            h = h @ wt.transpose(-1, -2) + b
            if i + 2 < len(shapes):
                h = torch.tanh(h)
        return h

    return forward


def _jax_mlp(shapes):
    import jax.numpy as jnp

    sizes = np.cumsum([math.prod(s) for s in shapes])[:-1]

    def forward(w, x):
        parts = jnp.split(w, sizes)
        h = x
        for i in range(0, len(shapes), 2):
            h = h @ parts[i].reshape(shapes[i]).T + parts[i + 1]
            if i + 2 < len(shapes):
                h = jnp.tanh(h)
        return h

    return forward


def _starts(shapes, dim):
    """PyTorch's default init, U(±1/sqrt(fan_in)) per layer, one generator per chain."""
    out = []
    for k in range(16):  # the first 4 are those of the 4-chain runs
        g = torch.Generator().manual_seed(1000 + k)
        parts = []
        for i, s in enumerate(shapes):
            fan_in = s[1] if len(s) == 2 else shapes[i - 1][1]
            bound = 1.0 / math.sqrt(fan_in)
            parts.append((torch.rand(math.prod(s), generator=g) * 2 - 1) * bound)
        out.append(torch.cat(parts))
    w = torch.stack(out)
    assert w.shape[1] == dim
    return w.numpy().astype(np.float32)


def bnn_problem(name: str) -> Problem:
    import jax
    import jax.numpy as jnp

    noise = 0.1
    if name == "reg":
        data, widths = regression_gap(n=40, noise=0.1, seed=0), [1, 50, 50, 1]
        grid = torch.linspace(-2, 2, 5).unsqueeze(1)
    elif name == "diabetes":
        data, widths, noise = diabetes_data(), [10, 16, 16, 1], 0.7
        grid = data.x[:5]
    else:
        data, widths = two_moons(n=200, noise=0.2, seed=0), [2, 32, 32, 2]
        grid = torch.tensor([[-1.0, 0.5], [0.0, 0.0], [0.5, 0.25], [1.0, -0.5], [2.0, 0.5]])
    shapes = _layer_sizes(widths)
    dim = sum(math.prod(s) for s in shapes)
    f_t, f_j = _torch_mlp(shapes), _jax_mlp(shapes)
    x, y = data.x, data.y
    xj, yj = jnp.asarray(x.numpy()), jnp.asarray(y.numpy())

    if name in ("reg", "diabetes"):
        var = noise**2

        def u_torch(w):
            return 0.5 * ((f_t(w, x) - y) ** 2).sum() / var + 0.5 * (w**2).sum()

        def u_jax(w):
            return 0.5 * jnp.sum((f_j(w, xj) - yj) ** 2) / var + 0.5 * jnp.sum(w**2)

        def pred(ws):
            return f_t(ws, grid)[..., 0]

    else:

        def u_torch(w):
            logits = f_t(w, x)
            return (
                torch.nn.functional.cross_entropy(logits, y, reduction="sum") + 0.5 * (w**2).sum()
            )

        def u_jax(w):
            logp = jax.nn.log_softmax(f_j(w, xj))
            nll = -jnp.sum(jnp.take_along_axis(logp, yj[:, None], axis=1))
            return nll + 0.5 * jnp.sum(w**2)

        def pred(ws):
            return torch.softmax(f_t(ws, grid), -1)[..., 1]

    return Problem(name, dim, u_torch, pred, u_jax, _starts(shapes, dim), 6, 16)


def diabetes_data() -> Dataset:
    """scikit-learn's diabetes data (442 patients, 10 inputs; shipped with the package),
    inputs and target standardised."""
    from sklearn.datasets import load_diabetes

    x, y = load_diabetes(return_X_y=True)
    x = (x - x.mean(0)) / x.std(0)
    y = (y - y.mean()) / y.std()
    return Dataset(
        "diabetes",
        torch.tensor(x, dtype=torch.float32),
        torch.tensor(y[:, None], dtype=torch.float32),
        "regression",
    )


def gauss_problem() -> Problem:
    import jax.numpy as jnp

    std = torch.logspace(-2, 0, 100)
    std_j = jnp.asarray(std.numpy())
    g = torch.Generator().manual_seed(7)
    starts = ((torch.rand(16, 100, generator=g) * 2 - 1) * std).numpy().astype(np.float32)
    return Problem(
        "gauss",
        100,
        lambda w: 0.5 * ((w / std) ** 2).sum(),
        lambda ws: ws,
        lambda w: 0.5 * jnp.sum((w / std_j) ** 2),
        starts,
        10,
        40,
        true_std=std.numpy(),
    )


# ------------------------------------------------------------------------ runs
@dataclass
class Result:
    problem: str
    sampler: str
    chains: int
    mode: str
    warmup_s: float
    sample_s: float
    grads: int
    draws: np.ndarray  # (chains, draws, dim) float
    compile_s: float | None = None
    tuned: tuple | None = None  # (step size, inverse mass, first draw) after our warmup
    notes: list[str] = field(default_factory=list)


class Counted:
    """Counts the calls of a torch potential (each call is followed by one backward)."""

    def __init__(self, fn):
        self.fn, self.calls = fn, 0

    def __call__(self, w):
        self.calls += 1
        return self.fn(w)


def run_ours(p: Problem, kind: str, chains: int, mode: str, warmup: int, draws: int) -> Result:
    starts = torch.from_numpy(p.starts[:chains])
    kw = {"max_tree_depth": p.max_tree_depth} if kind == "nuts" else {"num_steps": p.hmc_steps}
    if mode == "single":
        cls = NUTS if kind == "nuts" else HMC
        s = cls(starts[0], p.u_torch, seed=0, **kw)
        t0 = time.perf_counter()
        s.warmup(warmup)
        t1 = time.perf_counter()
        s.simulate_chain(draws)
        t2 = time.perf_counter()
        out = s.samples().numpy()[None]
        res = Result(
            p.name, f"bnn_mcmc {kind.upper()}", 1, "-", t1 - t0, t2 - t1, s.num_grad_evals, out
        )
        res.notes.append(f"eps={s.step_size:.3g}")
        res.tuned = (s.step_size, s.inv_mass, s.samples()[0].clone())
        return res
    t0 = time.perf_counter()  # compile_potential compiles at construction: counted as warmup
    if mode == "sequential+compile":
        m = MultiChainHMC(
            list(starts),
            p.u_torch,
            kind,
            seed=0,
            backend="sequential",
            compile_potential=True,
            **kw,
        )
    else:
        m = MultiChainHMC(list(starts), p.u_torch, kind, seed=0, backend=mode, **kw)
    m.warmup(warmup)
    t1 = time.perf_counter()
    m.simulate_chains(draws)
    t2 = time.perf_counter()
    grads = sum(c.num_grad_evals for c in m.chains)
    return Result(
        p.name,
        f"bnn_mcmc {kind.upper()}",
        chains,
        mode,
        t1 - t0,
        t2 - t1,
        grads,
        m.samples().numpy(),
    )


def run_lockstep(p: Problem, kind: str, chains: int, warmup: int, draws: int) -> Result:
    """ChEES-HMC or MEADS (``MultiChainHMC(chain_type=...)``), all chains in lockstep."""
    starts = torch.from_numpy(p.starts[:chains])
    t0 = time.perf_counter()
    m = MultiChainHMC(starts, p.u_torch, chain_type=kind, seed=0, backend="vectorized")
    m.warmup(warmup)
    t1 = time.perf_counter()
    m.simulate_chains(draws)
    t2 = time.perf_counter()
    res = Result(
        p.name,
        f"bnn_mcmc {kind}",
        chains,
        "vectorized",
        t1 - t0,
        t2 - t1,
        m.num_grad_evals,
        m.samples().numpy(),
    )
    if kind == "chees":
        res.notes.append(f"eps={m.step_size:.3g} T={m.trajectory_length:.3g}")
    return res


def run_race_ours(p: Problem, kind: str, chains: int, warmup: int, draws: int) -> Result:
    """Ours in the race: NUTS on the vectorized backend (its best with many chains), or
    ChEES-HMC (unit mass, as BlackJAX's default) / MEADS in lockstep."""
    starts = torch.from_numpy(p.starts[:chains])
    t0 = time.perf_counter()
    if kind == "nuts":
        m = MultiChainHMC(
            list(starts),
            p.u_torch,
            "nuts",
            seed=0,
            backend="vectorized",
            max_tree_depth=p.max_tree_depth,
        )
        m.warmup(warmup)
    else:
        m = MultiChainHMC(starts, p.u_torch, chain_type=kind, seed=0, backend="vectorized")
        if kind == "chees":
            m.warmup(warmup, adapt_mass=None)
        else:
            m.warmup(warmup)
    t1 = time.perf_counter()
    m.simulate_chains(draws)
    t2 = time.perf_counter()
    names = {"nuts": "bnn_mcmc NUTS", "chees": "bnn_mcmc ChEES", "meads": "bnn_mcmc MEADS"}
    grads = sum(c.num_grad_evals for c in m.chains)
    res = Result(
        p.name, names[kind], chains, "vectorized", t1 - t0, t2 - t1, grads, m.samples().numpy()
    )
    if kind == "chees":
        res.notes.append(f"eps={m.step_size:.3g} T={m.trajectory_length:.3g}")
    return res


def run_blackjax_chees(p: Problem, chains: int, warmup: int, draws: int) -> Result:
    """BlackJAX ChEES: ``blackjax.chees_adaptation`` (Adam 0.025 on log T, unit mass), then
    jittered HMC (``blackjax.dhmc``) with the adapted parameters, chains vmapped; the times
    include compilation."""
    import blackjax
    import jax
    import jax.numpy as jnp
    import optax

    def logdensity(w):
        return -p.u_jax(w)

    key_warm, key_sample = jax.random.split(jax.random.PRNGKey(0))
    init = jnp.asarray(p.starts[:chains])
    t0 = time.perf_counter()
    adapt = blackjax.chees_adaptation(logdensity, chains)
    (states, params), info = adapt.run(key_warm, init, 0.01, optax.adam(0.025), warmup)
    jax.block_until_ready(states.position)
    warm_steps = int(np.sum(np.asarray(info.info.num_integration_steps)))
    t1 = time.perf_counter()
    kernel = blackjax.dhmc(logdensity, **params).step

    @jax.jit
    def sample(states, key):
        def one(st, k):
            new, inf = jax.vmap(kernel)(jax.random.split(k, chains), st)
            return new, (new.position, inf.num_integration_steps)

        return jax.lax.scan(one, states, jax.random.split(key, draws))

    _, (positions, steps) = sample(states, key_sample)
    jax.block_until_ready(positions)
    t2 = time.perf_counter()
    grads = warm_steps + int(np.sum(np.asarray(steps)))
    res = Result(
        p.name,
        "BlackJAX ChEES",
        chains,
        "vmap",
        t1 - t0,
        t2 - t1,
        grads,
        np.asarray(positions).transpose(1, 0, 2),
    )
    res.notes.append(
        f"eps={float(params['step_size']):.3g} "
        f"L={float(params['integration_steps_params'][0]):.0f}; times incl. compile"
    )
    return res


def race(problems: list[str], sizes: dict, chain_counts=(4, 16)) -> str:
    """The race of issue 12: min ESS of predictions per second (warmup and compilation
    included) and R-hat of predictions, ours against NumPyro NUTS and BlackJAX ChEES."""
    rows = []
    for name in problems:
        p = bnn_problem(name)
        for chains in chain_counts:
            warm, dr = sizes["nuts"]
            runs = [
                run_race_ours(p, "nuts", chains, warm, dr),
                run_numpyro(p, chains, warm, dr),
            ]
            warm, dr = sizes["chees"]
            runs += [
                run_race_ours(p, "chees", chains, warm, dr),
                run_blackjax_chees(p, chains, warm, dr),
            ]
            warm, dr = sizes["meads"]
            runs.append(run_race_ours(p, "meads", chains, warm, dr))
            base = None
            for r in runs:
                m = metrics(p, r)
                if r.sampler == "NumPyro NUTS":
                    base = m["ess_f_per_s"]
                rows.append((r, m))
                print(
                    f"{name:8s} {r.sampler:16s} {chains:2d} {m['total_s']:7.1f}s "
                    f"R-hat(f) {m['rhat_f']:.3f} ESS(f) {m['ess_f']:.0f} "
                    f"ESS(f)/s {m['ess_f_per_s']:.3f} {' '.join(r.notes)}",
                    flush=True,
                )
            for _, m in rows[-len(runs) :]:
                m["vs_numpyro"] = m["ess_f_per_s"] / base if base else float("nan")
    head = (
        "| problem | sampler | chains | warmup s | sampling s | total s | grads | R-hat(f) "
        "| min ESS(f) | ESS(f)/s | vs NumPyro NUTS | notes |"
    )
    lines = [head, "|" + "---|" * 12]
    for r, m in rows:
        lines.append(
            f"| {r.problem} | {r.sampler} | {r.chains} | {r.warmup_s:.1f} | {r.sample_s:.1f} "
            f"| {m['total_s']:.1f} | {r.grads} | {m['rhat_f']:.3f} | {m['ess_f']:.0f} "
            f"| {m['ess_f_per_s']:.2f} | {m['vs_numpyro']:.2f} | {' '.join(r.notes)} |"
        )
    return "\n".join(lines)


def run_pyro(p: Problem, chains: int, warmup: int, draws: int) -> Result:
    import pyro
    from pyro.infer import MCMC
    from pyro.infer import NUTS as PyroNUTS

    all_draws, t_warm, t_samp, grads = [], 0.0, 0.0, 0
    for k in range(chains):
        pyro.set_rng_seed(k)
        counted = Counted(p.u_torch)
        kernel = PyroNUTS(
            potential_fn=lambda params, c=counted: c(params["w"]),
            adapt_step_size=True,
            adapt_mass_matrix=True,
            full_mass=False,
            max_tree_depth=p.max_tree_depth,
            target_accept_prob=0.8,
        )
        marks = {}

        def hook(kernel, params, stage, i, marks=marks):
            if stage == "Sample" and "sample" not in marks:
                marks["sample"] = time.perf_counter()

        mcmc = MCMC(
            kernel,
            num_samples=draws,
            warmup_steps=warmup,
            initial_params={"w": torch.from_numpy(p.starts[k])},
            disable_progbar=True,
            hook_fn=hook,
        )
        t0 = time.perf_counter()
        mcmc.run()
        t2 = time.perf_counter()
        t1 = marks.get("sample", t2)
        t_warm += t1 - t0
        t_samp += t2 - t1
        grads += counted.calls
        all_draws.append(mcmc.get_samples()["w"].numpy())
    return Result(
        p.name, "Pyro NUTS", chains, "sequential", t_warm, t_samp, grads, np.stack(all_draws)
    )


def run_numpyro(p: Problem, chains: int, warmup: int, draws: int) -> Result:
    import jax
    import jax.numpy as jnp
    from numpyro.infer import MCMC
    from numpyro.infer import NUTS as NumPyroNUTS

    def make():
        kernel = NumPyroNUTS(
            potential_fn=p.u_jax, max_tree_depth=p.max_tree_depth, target_accept_prob=0.8
        )
        return MCMC(
            kernel,
            num_warmup=warmup,
            num_samples=draws,
            num_chains=chains,
            chain_method="vectorized" if chains > 1 else "sequential",
            progress_bar=False,
        )

    init = jnp.asarray(p.starts[:chains]) if chains > 1 else jnp.asarray(p.starts[0])
    key = jax.random.PRNGKey(0)
    times = []
    for _ in range(2):  # the second pass reuses the compiled code: compile = difference
        mcmc = make()
        t0 = time.perf_counter()
        mcmc.warmup(key, init_params=init, collect_warmup=True, extra_fields=("num_steps",))
        jax.block_until_ready(mcmc.last_state)
        warm_steps = int(np.sum(mcmc.get_extra_fields()["num_steps"]))
        t1 = time.perf_counter()
        mcmc.run(key, init_params=init, extra_fields=("num_steps",))
        jax.block_until_ready(mcmc.last_state)
        t2 = time.perf_counter()
        times.append((t1 - t0, t2 - t1))
        if len(times) == 1:
            first = mcmc
            steps = warm_steps + int(np.sum(mcmc.get_extra_fields()["num_steps"]))
    (w1, s1), (w2, s2) = times
    samples = np.asarray(first.get_samples(group_by_chain=True))
    if chains == 1:
        samples = samples.reshape(1, *samples.shape[-2:])
    # warmup (incl. its compilation) and sampling (incl. its compilation) of the first pass
    res = Result(
        p.name,
        "NumPyro NUTS",
        chains,
        "vectorized" if chains > 1 else "-",
        w1,
        s1,
        steps,
        samples,
        compile_s=max(w1 - w2, 0) + max(s1 - s2, 0),
    )
    res.notes.append("grads = sum of num_steps")
    return res


def run_hypnettorch(p: Problem, kind: str, tuned, draws: int) -> Result:
    from hypnettorch.utils import hmc as H

    step, inv_mass, start = tuned
    counted = Counted(p.u_torch)
    if kind == "nuts":
        s = H.NUTS(start, counted, stepsize=step, inv_mass=inv_mass)
    else:
        s = H.HMC(start, counted, stepsize=step, num_steps=p.hmc_steps, inv_mass=inv_mass)
    t0 = time.perf_counter()
    s.simulate_chain(draws)
    t1 = time.perf_counter()
    out = torch.stack([q.detach() for q in s.position_trajectory[1:]]).numpy()[None]
    res = Result(p.name, f"hypnettorch {kind.upper()}", 1, "-", 0.0, t1 - t0, counted.calls, out)
    res.notes.append("oracle step size / mass from our warmup; grads = potential calls")
    return res


# -------------------------------------------------------------------- metrics
def metrics(p: Problem, r: Result) -> dict:
    draws = r.draws.astype(np.float64)
    w = torch.from_numpy(np.array(r.draws, dtype=np.float32))
    with torch.no_grad():
        u = np.stack([[float(p.u_torch(x)) for x in chain] for chain in w])
        preds = p.pred_torch(w.reshape(-1, p.dim)).reshape(*draws.shape[:2], -1).double().numpy()
    ess_u = float(az.ess(az.convert_to_dataset({"u": u}))["u"])
    f_set = az.convert_to_dataset({"f": preds})
    ess_f = float(np.min(az.ess(f_set)["f"].values))
    rhat_f = float(np.max(az.rhat(f_set)["f"].values)) if draws.shape[0] > 1 else float("nan")
    total = r.warmup_s + r.sample_s
    out = {
        "ess_u": ess_u,
        "ess_f": ess_f,
        "total_s": total,
        "rhat_f": rhat_f,
        "ess_f_per_sample_s": ess_f / max(r.sample_s, 1e-9),
        "us_per_grad": 1e6 * total / max(r.grads, 1),
        "ess_u_per_s": ess_u / total,
        "ess_f_per_s": ess_f / total,
        "ess_f_per_grad": ess_f / max(r.grads, 1),
    }
    if p.true_std is not None:
        flat = draws.reshape(-1, p.dim)
        out["mean_err"] = float(np.max(np.abs(flat.mean(0)) / p.true_std))
        out["sd_err"] = float(np.max(np.abs(flat.std(0) / p.true_std - 1)))
    return out


def table(rows) -> str:
    head = (
        "| problem | sampler | chains | mode | warmup s | sampling s | compile s | grads "
        "| µs/grad | R-hat(f) | ESS(U) | ESS(f) | ESS(f)/s | ESS(U)/s | ESS(f)/s sampling "
        "| ESS(f)/1k grads | mean err/σ | sd err/σ |"
    )
    lines = [head, "|" + "---|" * 18]
    for r, m in rows:
        comp = f"{r.compile_s:.1f}" if r.compile_s is not None else ""
        lines.append(
            f"| {r.problem} | {r.sampler} | {r.chains} | {r.mode} | {r.warmup_s:.1f} | "
            f"{r.sample_s:.1f} | {comp} | {r.grads} | {m['us_per_grad']:.0f} | "
            f"{m['rhat_f']:.2f} | {m['ess_u']:.0f} | {m['ess_f']:.0f} | {m['ess_f_per_s']:.2f} | "
            f"{m['ess_u_per_s']:.2f} | {m['ess_f_per_sample_s']:.2f} | "
            f"{1000 * m['ess_f_per_grad']:.2f} | "
            f"{m.get('mean_err', float('nan')):.2f} | {m.get('sd_err', float('nan')):.2f} |"
        )
    return "\n".join(lines)


def figure(rows, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    problems = sorted({r.problem for r, _ in rows}, key=["reg", "moons", "gauss"].index)
    fig, axes = plt.subplots(1, len(problems), figsize=(5 * len(problems), 4.5), squeeze=False)
    for ax, prob in zip(axes[0], problems):
        sel = [(r, m) for r, m in rows if r.problem == prob]
        labels = [f"{r.sampler}\n{r.chains}ch {r.mode}" for r, _ in sel]
        vals = [m["ess_f_per_s"] for _, m in sel]
        colors = ["C0" if r.sampler.startswith("bnn_mcmc") else "C1" for r, _ in sel]
        ax.barh(range(len(sel)), vals, color=colors)
        ax.set_yticks(range(len(sel)), labels, fontsize=7)
        ax.set_xscale("log")
        ax.set_xlabel("min ESS of predictions per second (incl. warmup, compile)")
        ax.set_title(prob)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes (smoke test)")
    parser.add_argument("--problems", default="reg,moons,gauss")
    parser.add_argument("--skip", default="", help="comma list: lockstep,pyro,numpyro,hypnettorch")
    parser.add_argument(
        "--race",
        action="store_true",
        help="only the race of issue 12 (reg, moons, diabetes; 4 and 16 chains; ours against "
        "NumPyro NUTS and BlackJAX ChEES); writes benchmarks/results/peers_chees.txt",
    )
    parser.add_argument(
        "--out", default="peers_chees.txt", help="file name under results/ of the race table"
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.race:
        sizes = {"nuts": (200, 200), "chees": (200, 200), "meads": (2000, 2000)}
        if args.quick:
            sizes = {"nuts": (20, 20), "chees": (20, 20), "meads": (100, 100)}
        problems = "reg,moons,diabetes" if args.problems == "reg,moons,gauss" else args.problems
        text = race(problems.split(","), sizes)
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / args.out).write_text(text + "\n")
        print()
        print(text)
        return
    skip = set(filter(None, args.skip.split(",")))
    sizes = {"reg": (200, 200), "moons": (200, 200), "gauss": (300, 500)}
    if args.quick:
        sizes = {k: (30, 30) for k in sizes}
    rows = []
    for name in args.problems.split(","):
        p = gauss_problem() if name == "gauss" else bnn_problem(name)
        warm, dr = sizes[name]
        runs = []
        tuned = {}
        for kind in ("nuts", "hmc"):
            single = run_ours(p, kind, 1, "single", warm, dr)
            tuned[kind] = single.tuned
            runs.append(single)
            for mode in ("sequential", "vectorized", "sequential+compile"):
                runs.append(run_ours(p, kind, 4, mode, warm, dr))
        if "lockstep" not in skip:
            for kind in ("chees", "meads"):
                for chains in (4, 16):
                    runs.append(run_lockstep(p, kind, chains, warm, dr))
        if "pyro" not in skip:
            runs.append(run_pyro(p, 4, warm, dr))
        if "numpyro" not in skip:
            runs.append(run_numpyro(p, 1, warm, dr))
            runs.append(run_numpyro(p, 4, warm, dr))
        if "hypnettorch" not in skip:
            runs.append(run_hypnettorch(p, "hmc", tuned["hmc"], dr))
            runs.append(run_hypnettorch(p, "nuts", tuned["nuts"], max(dr // 10, 10)))
        for r in runs:
            m = metrics(p, r)
            rows.append((r, m))
            print(
                f"{name:6s} {r.sampler:18s} {r.chains} {r.mode:10s} "
                f"{m['total_s']:7.1f}s grads {r.grads:8d} ESS(f)/s {m['ess_f_per_s']:.3f} "
                f"{' '.join(r.notes)}",
                flush=True,
            )
    RESULTS.mkdir(exist_ok=True)
    text = table(rows)
    (RESULTS / "peers.md").write_text(text + "\n")
    figure(rows, RESULTS / "peers.png")
    print()
    print(text)


if __name__ == "__main__":
    main()
