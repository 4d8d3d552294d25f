"""The lab's figures: each ``draw(plt, results) -> Figure`` reads only the results dict.

Because a figure is drawn from the same dict that goes to ``results.json``, any
figure can be redrawn later from the JSON alone. pyplot is passed in (see
tinylm.lab.report), so importing this module never imports matplotlib.
"""

from __future__ import annotations

import numpy as np


# --------------------------------------------------------------------------- induction
def _head_panel(plt, ax, steps, scores, ylabel: str, title: str) -> None:
    """One line per head, coloured by layer; scores (evals, L, H)."""
    colors = plt.cm.tab10.colors
    for layer in range(scores.shape[1]):
        for head in range(scores.shape[2]):
            ax.plot(steps, scores[:, layer, head], "-" if layer else "--", color=colors[layer % 10],
                    alpha=0.8, label=f"layer {layer + 1}" if head == 0 else None)
    ax.set(xlabel="step", ylabel=ylabel, ylim=(0, 1), title=title)
    ax.legend(fontsize=8)


def induction_curves(plt, results: dict):
    """Loss on random vs copied tokens (model and control); each head's induction and
    previous-token score over training, the phase change marked."""
    runs = results["runs"]
    fig, (ax_loss, ax_ind, ax_prev) = plt.subplots(1, 3, figsize=(16, 4.2))
    for name, style in (("model", "-"), ("control", ":")):
        h = runs[name]["history"]
        steps = [e["step"] for e in h]
        label = runs[name].get("label", f"{runs[name]['n_layer']}-layer")
        ax_loss.plot(steps, [e["random_loss"] for e in h], style, color="tab:gray",
                     label=f"{label}: random tokens")
        ax_loss.plot(steps, [e["copied_loss"] for e in h], style, color="tab:red",
                     label=f"{label}: copied tokens")
    ax_loss.set(xlabel="step", ylabel="loss (nats)", title="loss on random vs copied tokens")
    ax_loss.legend(fontsize=8)
    h = runs["model"]["history"]
    steps = [e["step"] for e in h]
    _head_panel(plt, ax_ind, steps, np.array([e["induction_scores"] for e in h]), "induction score",
                "attention to the token after the previous occurrence")
    _head_panel(plt, ax_prev, steps, np.array([e["previous_token_scores"] for e in h]),
                "previous-token score", "attention to the token just before")
    for ax in (ax_loss, ax_ind, ax_prev):
        ax.axvline(results["signature"]["phase_change_step"], color="k", lw=0.6, alpha=0.5)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- grokking
def grokking_curves(plt, results: dict):
    """Train and validation accuracy against step (log scale), with and without weight decay."""
    fig, (ax_acc, ax_loss) = plt.subplots(1, 2, figsize=(12, 4.2))
    for name, style in (("weight_decay", "-"), ("control", ":")):
        run = results["runs"][name]
        h = run["history"]
        steps = [max(e["step"], 1) for e in h]
        wd = run["weight_decay"]
        ax_acc.plot(steps, [e["train_acc"] for e in h], style, color="tab:blue",
                    label=f"train (wd {wd:g})")
        ax_acc.plot(steps, [e["val_acc"] for e in h], style, color="tab:red",
                    label=f"validation (wd {wd:g})")
        ax_loss.plot(steps, [e["train_loss"] for e in h], style, color="tab:blue",
                     label=f"train (wd {wd:g})")
        ax_loss.plot(steps, [e["val_loss"] for e in h], style, color="tab:red",
                     label=f"validation (wd {wd:g})")
    ax_acc.set(xscale="log", xlabel="step", ylabel="accuracy", ylim=(0, 1.02),
               title=f"a + b mod {results['config']['p']}")
    ax_loss.set(xscale="log", yscale="log", xlabel="step", ylabel="loss (nats)")
    ax_acc.legend(fontsize=8)
    ax_loss.legend(fontsize=8)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- scaling
def scaling_laws(plt, results: dict):
    """Validation loss against parameters (with the fitted power law) and against training FLOPs."""
    rows = results["models"]
    n = np.array([r["params"] for r in rows], dtype=float)
    flops = np.array([r["train_flops"] for r in rows], dtype=float)
    loss = np.array([r["val_loss"] for r in rows])
    fit = results["fit"]
    fig, (ax_n, ax_c) = plt.subplots(1, 2, figsize=(12, 4.2))
    grid = np.geomspace(n.min() / 1.5, n.max() * 1.5, 100)
    ax_n.plot(n, loss, "o", color="tab:blue", label="trained models")
    ax_n.plot(grid, fit["a"] * grid ** -fit["alpha"] + fit["c"], "-", color="tab:red",
              label=f"L = {fit['a']:.3g} N^-{fit['alpha']:.3f} + {fit['c']:.3f}  (R² {fit['r2']:.3f})")
    ax_n.set(xscale="log", yscale="log", xlabel="parameters N (non-embedding)",
             ylabel="validation loss (nats)", title="loss vs model size, same tokens")
    ax_n.legend(fontsize=8)
    ax_c.plot(flops, loss, "o-", color="tab:green")
    for r, x, y in zip(rows, flops, loss):
        ax_c.annotate(r["name"], (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax_c.set(xscale="log", yscale="log", xlabel="training FLOPs (6 N D)",
             ylabel="validation loss (nats)", title="loss vs training compute")
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- inspect
def _token_labels(tokens: list[str]) -> list[str]:
    return [repr(t)[1:-1] if t.strip() != t or not t.isprintable() else t for t in tokens]


def attention_grid(plt, results: dict):
    """One heatmap per layer (rows) and head (columns); query tokens down, key tokens across."""
    patterns = np.array(results["patterns"])                             # (L, H, T, T)
    labels = _token_labels(results["tokens"])
    L, H, T, _ = patterns.shape
    size = max(2.0, min(4.0, 0.14 * T))
    fig, axes = plt.subplots(L, H, figsize=(size * H, size * L), squeeze=False)
    for layer in range(L):
        for head in range(H):
            ax = axes[layer][head]
            ax.imshow(patterns[layer, head], cmap="Blues", vmin=0, vmax=1)
            ax.set_title(f"layer {layer + 1} head {head + 1}", fontsize=8)
            ticks = range(T) if T <= 48 else []
            ax.set_xticks(ticks, [labels[i] for i in ticks], fontsize=6, rotation=90)
            ax.set_yticks(ticks, [labels[i] for i in ticks], fontsize=6)
    fig.tight_layout()
    return fig


def ablation_heatmap(plt, results: dict):
    """Validation-loss change per layer x head when that head is ablated."""
    delta = np.array(results["delta"])                                   # (L, H)
    L, H = delta.shape
    fig, ax = plt.subplots(figsize=(1.2 * H + 2, 0.8 * L + 1.5))
    bound = max(abs(delta).max(), 1e-9)
    im = ax.imshow(delta, cmap="RdBu_r", vmin=-bound, vmax=bound)
    for layer in range(L):
        for head in range(H):
            ax.text(head, layer, f"{delta[layer, head]:+.3f}", ha="center", va="center", fontsize=8)
    ax.set_xticks(range(H), [f"head {h + 1}" for h in range(H)])
    ax.set_yticks(range(L), [f"layer {i + 1}" for i in range(L)])
    ax.set_title(f"loss change when a head is {results['mode']}-ablated "
                 f"(intact loss {results['base_loss']:.3f})", fontsize=9)
    fig.colorbar(im, ax=ax, shrink=0.8)
    fig.tight_layout()
    return fig
