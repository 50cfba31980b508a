"""The mutation score of each module of the numerical core, from a finished ``mutmut run`` (config:
pyproject.toml's [tool.mutmut]; report: benchmarks/MUTATION.md).

    mutmut run --max-children 2          # about 25 minutes on 2 cores
    python scripts/mutation_report.py    # a Markdown table, and the surviving mutants by module

A module's score is killed / (killed + survived); "no tests" are mutants in functions that no selected test
runs (listed apart). Mutants judged equivalent are discussed in the report, not subtracted here.
"""

from __future__ import annotations

import collections
import re
import subprocess
import sys

LINE = re.compile(r"^\s*(?P<name>[\w.ǁ]+?)__mutmut_\d+: (?P<status>.+)$")


def module(name: str) -> str:
    """``cnnviz.optim.lbfgs.xǁLBFGSǁstep`` or ``cnnviz.losses.x_gram`` -> ``cnnviz.optim.lbfgs``, ``cnnviz.losses``."""
    return re.split(r"\.x(?:ǁ|_)", name, maxsplit=1)[0]


def main() -> int:
    out = subprocess.run(["mutmut", "results", "--all", "true"], capture_output=True, text=True, check=True).stdout
    counts: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    survivors: dict[str, list[str]] = collections.defaultdict(list)
    for line in out.splitlines():
        match = LINE.match(line)
        if match:
            where = module(match["name"])
            counts[where][match["status"]] += 1
            if match["status"] == "survived":
                survivors[where].append(line.strip().split(":")[0])
    print("| module | mutants | killed | survived | no tests | score |\n|---|---|---|---|---|---|")
    for where, c in sorted(counts.items()):
        tested = c["killed"] + c["survived"]
        score = f"{100 * c['killed'] / tested:.1f} %" if tested else "-"
        print(f"| {where} | {sum(c.values())} | {c['killed']} | {c['survived']} | {c['no tests']} | {score} |")
    for where, names in sorted(survivors.items()):
        print(f"\n{where}: {len(names)} survived\n" + "\n".join(f"  {n}" for n in names))
    return 0


if __name__ == "__main__":
    sys.exit(main())
