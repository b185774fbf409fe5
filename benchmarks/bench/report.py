"""What a run shows: the text table of each size and of the fused linear section, the
Markdown summary of a results file (as pasted into ``benchmarks/README.md``), and the plot
of time per element against N.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.modes import FLOOR, FORWARD, MODES, VALUE_AND_GRAD


def _fmt_bytes(value: int | None) -> str:
    if value is None:
        return "-"
    return f"{value / 2**20:.1f}M" if value >= 2**20 else f"{value / 2**10:.1f}K"


def format_table(rows: list[dict]) -> str:
    """Formats the rows of one size as a text table.

    Args:
      rows: Rows of a single ``n``.

    Returns:
      The table.
    """
    n = rows[0]["n"]
    head = (
        f"{'mode':<15}{'contender':<24}{'median ms':>11}{'ns/elem':>9}{'x ref':>7}"
        f"{'x floor':>9}{'GB/s':>8}{'ideal B/N':>10}{'HLO B/N':>8}{'compile s':>10}"
        f"{'temp':>9}{'out':>9}{'peak':>9}"
    )
    foreign = rows[0].get("foreign_cpu")
    lines = [
        f"N = {n} (2^{math.log2(n):g}), shape {tuple(rows[0]['shape'])}, "
        f"{rows[0]['rounds']} rounds; other processes used "
        f"{'?' if foreign is None else f'{foreign:.0%}'} of the CPU meanwhile",
        head,
        "-" * len(head),
    ]
    for row in sorted(rows, key=lambda r: MODES.index(r["mode"]) if r["mode"] in MODES else 9):
        if row["mode"] == FLOOR:
            continue
        mem = row["memory"]
        ratio = row["ratio_to_ref"]
        compile_s = row["compile_s"]
        traffic = mem.get("hlo_traffic_bytes")
        lines.append(
            f"{row['mode']:<15}{row['label']:<24}{row['median_s'] * 1e3:>11.3f}"
            f"{row['ns_per_element']:>9.3f}"
            f"{(f'{ratio:.2f}' if ratio is not None else '-'):>7}"
            f"{row['floor_multiple']:>9.2f}{row['gbps']:>8.1f}"
            f"{row['ideal_bytes'] / n:>10.3g}"
            f"{(f'{traffic / n:.3g}' if traffic is not None else '-'):>8}"
            f"{(f'{compile_s:.2f}' if compile_s is not None else '-'):>10}"
            f"{_fmt_bytes(mem.get('temp_size_in_bytes')):>9}"
            f"{_fmt_bytes(mem.get('output_size_in_bytes')):>9}"
            f"{_fmt_bytes(mem.get('device_peak_bytes')):>9}"
        )
    floors = ", ".join(
        f"{r['ideal_bytes'] / n:g}N: {r['gbps']:.1f} GB/s" for r in rows if r["mode"] == FLOOR
    )
    lines.append(f"bandwidth floor (XLA copy, reads + writes): {floors}")
    lines.append(
        "x ref: time / jaxbce's (focal rows: / jaxbce focal's); x floor: time / the "
        "copy of the row's ideal bytes; both medians of per-round ratios. GB/s: ideal "
        "bytes / median time. HLO B/N: bytes read and written by the optimized program's "
        "ops, per element. temp, out: XLA memory_analysis(); peak: device peak."
    )
    return "\n".join(lines)


def format_linear_table(section: dict[str, Any]) -> str:
    """Formats the ``fused_linear`` section as a text table."""
    head = (
        f"{'L':>8}  {'contender':<28}{'median ms':>11}{'x unfused':>11}{'temp':>10}"
        f"{'compile s':>11}{'rounds':>8}{'other CPU':>11}"
    )
    lines = [
        f"Fused linear + BCE, value_and_grad in (features, kernel, bias); "
        f"B={section['batch']}, d={section['in_features']}",
        head,
        "-" * len(head),
    ]
    for row in section["rows"]:
        ratio = row.get("ratio_to_unfused")
        foreign = row.get("foreign_cpu")
        compile_s = row["compile_s"]
        if "median_ms" in row:
            timing = f"{row['median_ms']:>11.1f}{'-' if ratio is None else f'{ratio:.2f}':>11}"
        else:
            timing = f"{'not run':>11}{'-':>11}"
        lines.append(
            f"{row['labels']:>8}  {row['label']:<28}{timing}"
            f"{_fmt_bytes(row['memory'].get('temp_size_in_bytes')):>10}"
            f"{'-' if compile_s is None else f'{compile_s:.2f}':>11}"
            f"{row.get('rounds', 0):>8}"
            f"{'?' if foreign is None else f'{foreign:.0%}':>11}"
        )
    for row in section["rows"]:
        if "skipped" in row:
            lines.append(f"L={row['labels']} {row['label']}: {row['skipped']}")
    lines.append("x unfused: median of per-round ratios; temp: XLA memory_analysis() temp bytes.")
    return "\n".join(lines)


def linear_markdown(section: dict[str, Any]) -> str:
    """The ``fused_linear`` section as a Markdown table (for the README)."""
    lines = [
        f"B = {section['batch']}, d = {section['in_features']}, value_and_grad in "
        "(features, kernel, bias)",
        "",
        "| L | contender | ms / call | x unfused | temp bytes (XLA) | rounds | other CPU |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    for row in section["rows"]:
        ratio = row.get("ratio_to_unfused")
        foreign = row.get("foreign_cpu")
        cells = [
            f"2^{math.log2(row['labels']):g}",
            row["label"],
            f"{row['median_ms']:.1f}" if "median_ms" in row else "not run",
            "-" if ratio is None else f"{ratio:.2f}",
            _fmt_bytes(row["memory"].get("temp_size_in_bytes")),
            str(row.get("rounds", 0)),
            "?" if foreign is None else f"{foreign:.0%}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def markdown_summary(result: dict[str, Any], sizes: Sequence[int] | None = None) -> str:
    """A Markdown summary of a results JSON, as pasted into ``benchmarks/README.md``.

    Args:
      result: A results JSON, parsed.
      sizes: Sizes to tabulate (default: 2^20 and the largest measured).

    Returns:
      Markdown: one table per size (``value_and_grad`` then ``forward``), then targets.
    """
    rows = result["results"]
    measured = sorted({r["n"] for r in rows})
    lines = []
    if sizes is None:
        sizes = [n for n in (2**20,) if n in measured] + measured[-1:]
    for n in dict.fromkeys(sizes):
        size_rows = [r for r in rows if r["n"] == n and r["mode"] in MODES]
        if not size_rows:
            continue
        foreign = size_rows[0].get("foreign_cpu")
        lines += [
            f"**N = 2^{math.log2(n):g}** (shape {tuple(size_rows[0]['shape'])}, "
            f"{size_rows[0]['rounds']} rounds"
            + ("" if foreign is None else f"; other processes: {foreign:.0%} CPU")
            + ")",
            "",
            "| mode | contender | ns / element | x jaxbce | x floor | GB/s "
            "| ideal B/N | HLO B/N | temp / 4N | compile s |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for row in sorted(size_rows, key=lambda r: -MODES.index(r["mode"])):
            temp = row["memory"].get("temp_size_in_bytes")
            traffic = row["memory"].get("hlo_traffic_bytes")
            ratio = row.get("ratio_to_ref")
            ref = "" if row.get("ref") in (None, "jaxbce", row["contender"]) else " (focal)"
            cells = [
                row["mode"],
                row["label"],
                f"{row['ns_per_element']:.3g}",
                "-" if ratio is None else f"{ratio:.2f}{ref}",
                f"{row['floor_multiple']:.2f}",
                f"{row['gbps']:.3g}",
                f"{row['ideal_bytes'] / n:g}",
                "-" if traffic is None else f"{traffic / n:.3g}",
                "-" if temp is None else f"{temp / (4 * n):.2f}",
                "-" if row["compile_s"] is None else f"{row['compile_s']:.2f}",
            ]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    if "fused_linear" in result:
        lines += [linear_markdown(result["fused_linear"])]
    lines.append("Targets:")
    lines.append("")
    for target in result["targets"]:
        lines.append(f"- **{target['status']}**: {target['target']} ({target['detail']})")
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], path: Path, title: str) -> None:
    """Writes the log-log plot of time per element against N.

    Args:
      rows: All rows.
      path: PNG to write.
      title: Figure title.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(14, 7), sharey=True)
    order = dict.fromkeys(r["contender"] for r in rows if r["mode"] != FLOOR)
    colors = {key: f"C{i % 10}" for i, key in enumerate(order)}
    for ax, mode, floor_bytes in ((axes[0], FORWARD, 8), (axes[1], VALUE_AND_GRAD, 12)):
        keys = list(dict.fromkeys(r["contender"] for r in rows if r["mode"] == mode))
        for key in keys:
            pts = sorted(
                (r["n"], r["ns_per_element"], r["label"])
                for r in rows
                if r["mode"] == mode and r["contender"] == key
            )
            group = next(r["group"] for r in rows if r["contender"] == key)
            style = {"reference": "--", "focal": "-."}.get(group, "-")
            ax.plot(
                [p[0] for p in pts],
                [p[1] for p in pts],
                style,
                marker="o",
                markersize=3,
                color=colors[key],
                linewidth=2.2 if key == "jaxbce" else 1.2,
                label=pts[0][2],
            )
        floor = sorted(
            (r["n"], r["ns_per_element"])
            for r in rows
            if r["mode"] == FLOOR and r["ideal_bytes"] == floor_bytes * r["n"]
        )
        if floor:
            ax.plot(
                [p[0] for p in floor],
                [p[1] for p in floor],
                "k:",
                linewidth=2.5,
                label=f"bandwidth floor ({floor_bytes}N-byte copy)",
            )
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("N (elements)")
        ax.set_title(f"{mode} of the mean loss")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=3)
    axes[0].set_ylabel("time per element (ns, median)")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
