"""Plots of a :class:`~snnrun.train.hooks.Diagnostics` event, written as PNG files.

The trainer hands out spikes, potentials, per-neuron rates and the confusion matrix;
this module draws them (matplotlib's object API, no pyplot state, no display):

    raster_<layer>.png     spike raster of each layer (input included), traced samples
    trace.png              membrane potential of a few neurons per LIF layer, V_th drawn
    rates.png              per-layer histogram of neuron firing rates (dead and
                           saturated neurons counted in the title)
    confusion.png / .json  test-set confusion matrix (rows: true class)
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from torch import Tensor

from snnrun.train.hooks import Diagnostics

TRACED_NEURONS = 3  # potential traces per LIF layer
MAX_RASTER_NEURONS = 2000  # more and the raster shows a random subset


def layer_name(index: int) -> str:
    """``input`` for layer 0, else ``layer<index>``."""
    return "input" if index == 0 else f"layer{index}"


def write_all(event: Diagnostics, folder: Path) -> list[Path]:
    """Write every plot (and ``confusion.json``) of ``event`` into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = [
        _save(raster(event, i), folder / f"raster_{layer_name(i)}.png")
        for i in range(len(event.spikes))
    ]
    paths.append(_save(traces(event), folder / "trace.png"))
    paths.append(_save(rate_histograms(event), folder / "rates.png"))
    if event.confusion is not None:
        paths.append(_save(confusion(event.confusion), folder / "confusion.png"))
        paths.append(write_confusion_json(event.confusion, folder / "confusion.json"))
    return paths


def raster(event: Diagnostics, layer: int) -> Figure:
    """Spike raster of one layer: x = time step, y = neuron, one panel per sample."""
    spikes = event.spikes[layer]  # [T, S, N]
    steps, samples, neurons = spikes.shape
    shown = _neuron_subset(neurons)
    figure = Figure(figsize=(4 * samples, 4), layout="constrained")
    axes = figure.subplots(1, samples, squeeze=False)[0]
    for s, ax in enumerate(axes):
        t, n = np.nonzero(spikes[:, s, shown].numpy())
        ax.scatter(t + 1, n, s=4, marker="|", color="black")
        ax.set_xlim(0.5, steps + 0.5)
        ax.set_ylim(-0.5, len(shown) - 0.5)
        ax.set_xlabel("time step t")
        ax.set_ylabel("neuron index" + (" (subset)" if len(shown) < neurons else ""))
        ax.set_title(_sample_title(event, s))
    figure.suptitle(
        f"Spike raster, {layer_name(layer)} ({neurons} neurons), epoch {event.epoch}"
    )
    return figure


def traces(event: Diagnostics) -> Figure:
    """Membrane potential u[t] of the most active neurons of each LIF layer (first
    traced sample), spikes marked, the threshold V_th dashed."""
    layers = len(event.potentials)
    figure = Figure(figsize=(6, 2.5 * layers), layout="constrained")
    axes = figure.subplots(layers, 1, squeeze=False)[:, 0]
    for index, ax in enumerate(axes):
        u = event.potentials[index][:, 0].numpy()  # [T, N]
        o = event.spikes[index + 1][:, 0].numpy()
        steps = np.arange(1, u.shape[0] + 1)
        for n in _busiest(o, u):
            (line,) = ax.plot(steps, u[:, n], marker=".", label=f"neuron {n}")
            fired = o[:, n] > 0
            ax.scatter(steps[fired], u[fired, n], marker="^", color=line.get_color())
        ax.axhline(event.threshold, color="red", linestyle="--", label="V_th")
        ax.set_xlabel("time step t")
        ax.set_ylabel("potential u")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(f"{layer_name(index + 1)}  (▲ = spike)")
        ax.legend(fontsize="small", loc="upper right")
    figure.suptitle(
        f"Membrane potential, {_sample_title(event, 0)}, epoch {event.epoch}"
    )
    return figure


def rate_histograms(event: Diagnostics) -> Figure:
    """Histogram of neuron firing rates per layer; dead (rate 0) and saturated
    (rate 1: a spike every step) neurons are counted in each panel's title."""
    layers = len(event.rates)
    figure = Figure(figsize=(4 * layers, 3.2), layout="constrained")
    axes = figure.subplots(1, layers, squeeze=False)[0]
    bins = np.linspace(0.0, 1.0, 21)
    for index, ax in enumerate(axes):
        rates = event.rates[index].numpy()
        dead, full = int((rates == 0).sum()), int((rates >= 1).sum())
        ax.hist(np.clip(rates, 0.0, 1.0), bins=bins, color="tab:blue")
        ax.set_yscale("log")
        ax.set_xlabel("firing rate (spikes per step)")
        ax.set_ylabel("neurons")
        ax.set_title(
            f"{layer_name(index)}: {len(rates)} neurons\ndead {dead}, saturated {full}",
            fontsize="medium",
        )
    figure.suptitle(
        f"Firing rates over {event.samples_for_rates} test samples, epoch {event.epoch}"
    )
    return figure


def confusion(counts: Tensor) -> Figure:
    """Confusion matrix: rows the true class, columns the predicted one, counts."""
    matrix = counts.numpy()
    classes = matrix.shape[0]
    figure = Figure(
        figsize=(1 + 0.55 * classes, 0.6 + 0.5 * classes), layout="constrained"
    )
    ax = figure.subplots()
    image = ax.imshow(matrix, cmap="Blues")
    figure.colorbar(image, ax=ax, label="test samples")
    for (row, col), value in np.ndenumerate(matrix):
        dark = value > matrix.max() / 2
        ax.text(
            col,
            row,
            str(value),
            ha="center",
            va="center",
            fontsize="x-small",
            color="white" if dark else "black",
        )
    ax.set_xticks(range(classes))
    ax.set_yticks(range(classes))
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    accuracy = np.trace(matrix) / max(matrix.sum(), 1)
    ax.set_title(f"Test confusion matrix (acc {100 * accuracy:.2f}%)")
    return figure


def write_confusion_json(counts: Tensor, path: Path) -> Path:
    """``{"rows": "true class", "columns": "predicted class", "counts": [[...]]}``."""
    payload = {
        "rows": "true class",
        "columns": "predicted class",
        "counts": counts.tolist(),
    }
    path.write_text(json.dumps(payload, indent=1), encoding="utf-8")
    return path


def _save(figure: Figure, path: Path) -> Path:
    figure.savefig(path, dpi=100)
    return path


def _sample_title(event: Diagnostics, s: int) -> str:
    return f"test sample {int(event.samples[s])} (class {int(event.labels[s])})"


def _neuron_subset(neurons: int) -> np.ndarray:
    """All neuron indices, or an evenly spaced subset of MAX_RASTER_NEURONS."""
    if neurons <= MAX_RASTER_NEURONS:
        return np.arange(neurons)
    return np.linspace(0, neurons - 1, MAX_RASTER_NEURONS).round().astype(int)


def _busiest(spikes: np.ndarray, u: np.ndarray) -> list[int]:
    """Up to TRACED_NEURONS neurons: most spikes first, then the highest peak u."""
    order = np.lexsort((-u.max(axis=0), -spikes.sum(axis=0)))
    return [int(n) for n in order[:TRACED_NEURONS]]
