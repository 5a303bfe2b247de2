"""A :class:`~kafkapipe.migrate.compare.Comparison` as a table, JSON or CSV; nothing hostile reaches a terminal."""

from __future__ import annotations

import csv
from typing import TextIO

from kafkapipe.migrate.compare import FIELDS, KINDS, Comparison
from kafkapipe.printable import json_text, printable


def as_json(result: Comparison, max_mismatch: float) -> str:
    return json_text({
        "total": result.total, "mismatches": result.mismatches, "mismatch_rate": result.rate(),
        "max_mismatch": max_mismatch, "passed": result.rate() <= max_mismatch, "bad_legacy_rows": result.bad_rows,
        "counts": result.counts, "rates": {k: result.rate(k) for k in KINDS}, "examples": result.examples,
    }, indent=2)


def write_csv(result: Comparison, out: TextIO) -> None:
    """One line per example, after one ``count`` line per kind."""
    writer = csv.writer(out)
    writer.writerow(["kind", "count", "rate", *FIELDS])
    for kind in KINDS:
        writer.writerow([kind, result.counts[kind], f"{result.rate(kind):.6f}"])
        for example in result.examples[kind]:
            writer.writerow([kind, "", "", *(printable(str(example[f])) if example[f] is not None else ""
                                             for f in FIELDS)])


def write_table(result: Comparison, max_mismatch: float, out: TextIO) -> None:
    print(f"{'kind':16} {'count':>10} {'rate':>9}", file=out)
    for kind in KINDS:
        print(f"{kind:16} {result.counts[kind]:>10} {result.rate(kind):>9.4%}", file=out)
    verdict = "PASS" if result.rate() <= max_mismatch else "FAIL"
    print(f"{'total':16} {result.total:>10}\nmismatch rate {result.rate():.4%} (max {max_mismatch:.4%}): {verdict}",
          file=out)
    if result.bad_rows:
        print(f"legacy rows skipped as bad: {result.bad_rows}", file=out)
    for kind in KINDS[1:]:
        if result.examples[kind]:
            print(f"\nfirst {len(result.examples[kind])} {kind}:", file=out)
            for ex in result.examples[kind]:
                print(f"  {ex['task_id']} legacy={ex['legacy_status'] or '-'}/{ex['legacy_sha256'] or '-'}/"
                      f"{ex['legacy_bytes'] if ex['legacy_bytes'] is not None else '-'} "
                      f"kafkapipe={ex['status'] or '-'}/{ex['sha256'] or '-'}/"
                      f"{ex['bytes'] if ex['bytes'] is not None else '-'} {printable(ex['url'] or '')}", file=out)
