"""How much the simulator's context says about the next behavior: a logistic-regression probe.

The simulator is meant to carry the paper's setting: rare behaviors that a model can learn to predict from their
context (place, hour, day type, the related behavior just before), not noise, in a log large enough to train and
test on every behavior. This probe measures that on a prepared simulated dataset, independent of any language
model:

- simulate and prepare (the demo's setting by default: 200 users x 14 days, seed 0, history length 10);
- features of each sample: the next event's hour (one-hot) and weekend flag, its place (one-hot), and each of the
  last three behaviors (one-hot);
- fit a multinomial logistic regression on the train split, once class-weighted ("balanced") and once
  unweighted;
- score both on the balanced test set with the long-tail protocol: recall averaged over the behaviors of each
  group (head / medium / tail) and over all behaviors;
- report coverage (the fewest training and balanced-test samples any behavior has) and the group shares next to
  Table 3's.

Targets (the demo's needs): class-weighted tail and head recall >= 0.30; every behavior >= 40 training samples
(2F, F = 20) and >= 10 balanced-test samples.

Run: ``python -m benchmarks.simulator_signal [--users 200 --days 14 --seed 0 --history-len 10]`` (under a
minute on 2 CPU cores).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import sparse

GROUPS = ("head", "medium", "tail", "overall")
LAST = 3  # previous behaviors used as features
MODELS = {"weighted": "balanced", "unweighted": None}  # name -> scikit-learn class_weight
TARGET_RECALL = 0.30  # class-weighted head and tail
MIN_TRAIN, MIN_BALANCED = 40, 10


@dataclass
class SignalReport:
    users: int
    days: int
    seed: int
    history_len: int
    events: int
    samples: dict[str, int]
    recall: dict[str, dict[str, float]]  # model -> group -> class-averaged recall on the balanced test
    per_behavior: pd.DataFrame  # behavior -> group, share, table3, train / balanced-test samples, recall per model
    seconds: float

    @property
    def min_train(self) -> int:
        return int(self.per_behavior["train"].min())

    @property
    def min_balanced(self) -> int:
        return int(self.per_behavior["balanced"].min())

    def group_shares(self, column: str = "share") -> dict[str, float]:
        """Share of events of each group (groups as prepared from the simulated log)."""
        table = self.per_behavior
        return {g: float(table.loc[table["group"] == g, column].sum()) for g in ("head", "medium", "tail")}


def features(frame: pd.DataFrame, behaviors: list[str], places: list[str]) -> sparse.csr_matrix:
    """One-hot context of each sample: hour (24), weekend (1), place, and each of the last ``LAST`` behaviors."""
    index_b = {b: i for i, b in enumerate(behaviors)}
    index_p = {p: i for i, p in enumerate(places)}
    n_b, n_p = len(behaviors), len(places)
    when = pd.to_datetime(frame["target_time"])
    columns = [when.dt.hour.to_numpy(), np.where(when.dt.day_of_week.to_numpy() >= 5, 24, -1),
               25 + frame["target_place"].map(index_p).fillna(-26).to_numpy(dtype=int)]
    offset = 25 + n_p
    for k in range(1, LAST + 1):
        prev = np.array([index_b.get(h[-k]["behavior"], -1) if len(h) >= k else -1 for h in frame["history"]])
        columns.append(np.where(prev >= 0, offset + (k - 1) * n_b + prev, -1))
    cols = np.stack(columns, axis=1)
    rows = np.repeat(np.arange(len(frame)), cols.shape[1]).reshape(cols.shape)
    keep = cols >= 0  # -1: not a weekend, unknown place, history too short
    return sparse.csr_matrix((np.ones(int(keep.sum())), (rows[keep], cols[keep])),
                             shape=(len(frame), offset + LAST * n_b))


def probe(data_dir, models: tuple[str, ...] = tuple(MODELS)) -> tuple[dict[str, dict[str, float]], pd.DataFrame]:
    """Fit the regressions on a prepared dataset's train split; class-averaged recall on its balanced test.

    A behavior without balanced-test samples counts in no group's average (its coverage shows in the table).
    """
    from sklearn.linear_model import LogisticRegression

    from behaviorlm.data.simulate import TABLE3
    from behaviorlm.data.types import PreparedData

    data = PreparedData(data_dir)
    infos = data.stats.behaviors
    behaviors = [b.name for b in infos]
    train = pd.read_parquet(data.root / "train.parquet")
    balanced = pd.read_parquet(data.root / "balanced_test.parquet")
    places = sorted(set(train["target_place"]) | set(balanced["target_place"]))
    x_train, x_test = features(train, behaviors, places), features(balanced, behaviors, places)
    y_train, y_test = train["target_behavior"].to_numpy(), balanced["target_behavior"].to_numpy()

    total3 = sum(TABLE3.values())
    table = pd.DataFrame({
        "group": [b.group for b in infos], "share": [b.share for b in infos],
        "table3": [TABLE3.get(b.name, np.nan) / total3 for b in infos],
        "train": pd.Series(y_train).value_counts().reindex(behaviors).fillna(0).astype(int).to_numpy(),
        "balanced": pd.Series(y_test).value_counts().reindex(behaviors).fillna(0).astype(int).to_numpy(),
    }, index=behaviors)
    recall: dict[str, dict[str, float]] = {}
    for name in models:
        model = LogisticRegression(class_weight=MODELS[name], max_iter=300)
        model.fit(x_train, y_train)
        hit = pd.Series(model.predict(x_test) == y_test).groupby(y_test).mean()
        table[name] = hit.reindex(behaviors)  # NaN: no balanced-test sample
        scored = table.dropna(subset=[name])
        recall[name] = {g: float(scored.loc[scored["group"] == g, name].mean()) for g in GROUPS[:-1]}
        recall[name]["overall"] = float(scored[name].mean())
    return recall, table


def measure(users: int = 200, days: int = 14, seed: int = 0, history_len: int = 10,
            events: pd.DataFrame | None = None, models: tuple[str, ...] = tuple(MODELS)) -> SignalReport:
    """Simulate (unless ``events``, a log of that simulation, is given), prepare in a temporary folder, probe."""
    from behaviorlm.config import DataConfig, SimulatorConfig
    from behaviorlm.data.prepare import prepare_dataset

    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        data = prepare_dataset(DataConfig(history_len=history_len, seed=0), f"{tmp}/data", events=events,
                               simulator=SimulatorConfig(users=users, days=days, seed=seed), progress=False)
        recall, table = probe(data.root, models)
    return SignalReport(users=users, days=days, seed=seed, history_len=history_len,
                        events=sum(b.count for b in data.stats.behaviors), samples=dict(data.stats.samples),
                        recall=recall, per_behavior=table, seconds=time.perf_counter() - started)


def render(report: SignalReport, per_behavior: bool = False) -> str:
    table = report.per_behavior
    counts = table["group"].value_counts()
    shares, table3 = report.group_shares(), report.group_shares("table3")
    anchors = table[table["table3"] > 0.01]
    ratio = anchors["share"] / anchors["table3"]
    lines = [
        f"simulator {report.users} users x {report.days} days, seed {report.seed}, history length "
        f"{report.history_len}: {report.events} events; samples "
        + ", ".join(f"{k} {v}" for k, v in report.samples.items()),
        "groups (share of events; Table 3's share of the same behaviors): " + ", ".join(
            f"{g} {counts.get(g, 0)} behaviors {shares[g]:.1%} ({table3[g]:.1%})" for g in ("head", "medium", "tail")),
        f"head and medium behaviors, share / Table 3: {ratio.min():.2f} ({ratio.idxmin()}) to "
        f"{ratio.max():.2f} ({ratio.idxmax()})",
        "",
        "logistic regression on context (hour, weekend, place, last 3 behaviors), balanced test, "
        "class-averaged recall:",
        f"{'model':<12}" + "".join(f"{g:>9}" for g in GROUPS),
    ]
    for name, values in report.recall.items():
        lines.append(f"{name:<12}" + "".join(f"{values[g]:9.3f}" for g in GROUPS))
    lines += [
        "",
        f"coverage: min training samples per behavior {report.min_train} ({table['train'].idxmin()}), "
        f"min balanced-test samples {report.min_balanced} ({table['balanced'].idxmin()})",
    ]
    if "weighted" in report.recall:
        w = report.recall["weighted"]
        checks = {f"weighted tail >= {TARGET_RECALL}": w["tail"] >= TARGET_RECALL,
                  f"weighted head >= {TARGET_RECALL}": w["head"] >= TARGET_RECALL,
                  f"train >= {MIN_TRAIN}": report.min_train >= MIN_TRAIN,
                  f"balanced test >= {MIN_BALANCED}": report.min_balanced >= MIN_BALANCED}
        lines.append("targets: " + ", ".join(f"{k} {'met' if ok else 'MISSED'}" for k, ok in checks.items()))
    if per_behavior:
        lines += ["", table.to_string(float_format=lambda v: f"{v:.4f}")]
    lines.append(f"({report.seconds:.0f} s)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--days", type=int, default=14)
    parser.add_argument("--seed", type=int, default=0, help="simulator seed")
    parser.add_argument("--history-len", type=int, default=10)
    parser.add_argument("--per-behavior", action="store_true", help="also print each behavior's counts and recall")
    args = parser.parse_args(argv)
    report = measure(args.users, args.days, args.seed, args.history_len)
    print(render(report, per_behavior=args.per_behavior))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
