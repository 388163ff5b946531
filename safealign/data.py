"""Loaders for PKU-SafeRLHF-style preference data and evaluation prompt sets, with schema checks.

A source is a local .json/.jsonl/.parquet/.csv file or a Hugging Face hub id (with an optional
revision, which benchmark configs pin). Every problem is reported in one line that names the source.
"""
from __future__ import annotations

import json
from pathlib import Path

from safealign import BenchError

PREFERENCE_COLUMNS = ("prompt", "response_0", "response_1", "is_response_0_safe", "is_response_1_safe",
                      "better_response_id", "safer_response_id")


def read_rows(source: str, split: str = "train", revision: str | None = None) -> list[dict]:
    path = Path(source)
    if path.exists():
        return _read_local(path)
    if path.suffix in (".json", ".jsonl", ".parquet", ".csv") or source.startswith((".", "/")):
        raise BenchError(f"data file {source} does not exist: check the path")
    try:
        import datasets
        ds = datasets.load_dataset(source, revision=revision or None, split=split)
    except Exception as e:  # the hub client raises many types; the user needs the source and the reason
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise BenchError(f"could not load dataset '{source}' (split {split}, revision {revision or 'latest'}) "
                         f"from the hub: {reason}; pass a local .jsonl/.parquet path instead") from None
    return [dict(r) for r in ds]


def _read_local(path: Path) -> list[dict]:
    try:
        if path.suffix == ".jsonl":
            return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        if path.suffix == ".json":
            data = json.loads(path.read_text())
            return data if isinstance(data, list) else data.get("data", data.get("instances", []))
        if path.suffix in (".parquet", ".csv"):
            import pandas as pd
            frame = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
            return frame.to_dict("records")
    except (json.JSONDecodeError, OSError, ValueError) as e:
        raise BenchError(f"data file {path} could not be read: {str(e).splitlines()[0]}") from None
    raise BenchError(f"data file {path} has an unknown format: use .jsonl, .json, .parquet or .csv")


def require_columns(rows: list[dict], columns, what: str, hint: str) -> None:
    """One line naming `what` when it has no rows or its first row lacks one of `columns`."""
    if not rows:
        raise BenchError(f"{what} is empty")
    missing = [c for c in columns if c not in rows[0]]
    if missing:
        raise BenchError(f"{what} is missing column '{missing[0]}' ({hint})")


def validate_preferences(rows: list[dict], source: str) -> list[dict]:
    """Check the PKU-SafeRLHF schema; returns the rows with ids as ints and safety flags as bools."""
    require_columns(rows, PREFERENCE_COLUMNS, f"preference data {source}", f"needs {', '.join(PREFERENCE_COLUMNS)}")
    out = []
    for i, row in enumerate(rows):
        for col in ("better_response_id", "safer_response_id"):
            if row[col] not in (0, 1) or isinstance(row[col], float) and not row[col].is_integer():
                raise BenchError(f"preference data {source}, row {i}: {col} is {row[col]!r}, must be 0 or 1")
        if not isinstance(row["prompt"], str) or not row["prompt"].strip():
            raise BenchError(f"preference data {source}, row {i}: prompt is empty")
        for col in ("is_response_0_safe", "is_response_1_safe"):
            if row[col] not in (True, False, 0, 1):
                raise BenchError(f"preference data {source}, row {i}: {col} is {row[col]!r}, must be true/false")
        clean = dict(row)
        for col in ("better_response_id", "safer_response_id"):
            clean[col] = int(row[col])
        for col in ("is_response_0_safe", "is_response_1_safe"):
            clean[col] = bool(row[col])
        out.append(clean)
    return out


def load_preferences(source: str, split: str = "train", revision: str | None = None) -> list[dict]:
    return validate_preferences(read_rows(source, split, revision), f"{source}[{split}]")


INSTRUCTION_COLUMNS = ("instruction", "input", "output")


def is_missing_file(source: str) -> bool:
    """True when `source` names a local file (a path, or a name with a data file's suffix, as read_rows tells
    them from hub ids) that does not exist: a check that can run while planning."""
    path = Path(source)
    looks_local = path.suffix in (".json", ".jsonl", ".parquet", ".csv") or source.startswith((".", "/"))
    return looks_local and not path.exists()


def load_instructions(source: str, split: str = "train", revision: str | None = None) -> list[dict]:
    """Instruction data in the Alpaca format (tatsu-lab/alpaca: {instruction, input, output}, `input` often
    empty) as [{instruction, input, output}] strings, with schema checks; for Safe RLHF's PTX loss."""
    rows = read_rows(source, split, revision)
    require_columns(rows, ("instruction", "output"), f"instruction data {source}",
                    f"the Alpaca format: {', '.join(INSTRUCTION_COLUMNS)}; input may be empty")
    out = []
    for i, row in enumerate(rows):
        for col in ("instruction", "output"):
            if not isinstance(row[col], str) or not row[col].strip():
                raise BenchError(f"instruction data {source}, row {i}: {col} is empty")
        extra = row.get("input")
        out.append({"instruction": row["instruction"], "input": extra if isinstance(extra, str) else "",
                    "output": row["output"]})    # a missing input (None, or NaN from a table) is no input
    return out


PROMPT_FIELDS = ("prompt", "instruction", "input", "question")


def load_prompts(source: str, split: str = "test", revision: str | None = None, prefix: str = "p",
                 where: dict | None = None) -> list[dict]:
    """Evaluation prompts as [{prompt_id, prompt, category}]. Accepts the red-team file's `prompt`, AlpacaEval's
    `instruction`, and keeps a given `prompt_id`/`id`; rows without one are numbered in file order. `where`
    keeps the rows whose columns equal the given values, e.g. {dataset = "helpful_base"} picks AlpacaEval's
    129 helpful_base prompts out of its 805."""
    rows = read_rows(source, split, revision)
    for column, value in (where or {}).items():
        if rows and column not in rows[0]:
            raise BenchError(f"prompt set {source} has no column '{column}' to filter on (where.{column})")
        rows = [r for r in rows if r[column] == value]
    if not rows:
        raise BenchError(f"prompt set {source} is empty" + (f" after filtering on {where}" if where else ""))
    field = next((f for f in PROMPT_FIELDS if f in rows[0]), None)
    if field is None:
        raise BenchError(f"prompt set {source} has no prompt column: name it one of {', '.join(PROMPT_FIELDS)}")
    out = []
    for i, row in enumerate(rows):
        text = row.get(field)
        if not isinstance(text, str) or not text.strip():
            raise BenchError(f"prompt set {source}, row {i}: {field} is empty")
        pid = str(row.get("prompt_id", row.get("id", f"{prefix}-{i:03d}")))
        out.append({"prompt_id": pid, "prompt": text, "category": str(row.get("category", "") or "")})
    if len({r["prompt_id"] for r in out}) != len(out):
        raise BenchError(f"prompt set {source} has duplicate prompt ids")
    return out


def spread(rows: list[dict], n: int | None, key: str = "category") -> list[dict]:
    """`n` rows spread over the groups of `key` (as evenly as their sizes allow) and, inside a group, evenly over
    its file order; so `--limit` keeps every harm category and topic in view instead of the first N rows."""
    if not n or n >= len(rows):
        return rows
    groups: dict = {}
    for i, r in enumerate(rows):
        groups.setdefault(r.get(key, ""), []).append(i)
    quota, left = dict.fromkeys(groups, 0), n
    while left:
        for g, members in groups.items():
            if left and quota[g] < len(members):
                quota[g] += 1
                left -= 1
    keep = {members[j * len(members) // quota[g]] for g, members in groups.items() for j in range(quota[g])}
    return [r for i, r in enumerate(rows) if i in keep]
