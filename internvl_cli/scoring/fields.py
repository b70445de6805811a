"""Extract scoring: field accuracy by the omni benchmark's formula, per-field counts for precision and recall.

Field accuracy = max(0, 1 - (added + deleted + changed) / fields of the truth), where a field is a scalar (or
null) anywhere in the truth, array elements included (omni's `countTotalFields`). Objects are compared key by
key; a key only in the output adds its fields, one only in the truth deletes its fields; a value replaced by
one of another shape (an object by null, null by an array) changes as many fields as the truth had there (or
the output, where the truth had null; at least one). Arrays are compared element by element after the best
one-to-one matching (scipy's linear_sum_assignment, fewest differences), so order does not matter: unmatched
elements of the truth are deleted, unmatched ones of the output added. Scalars compare as `values.same_value`.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from .values import same_value


@dataclass
class FieldDiff:
    """Differences between a truth value and an output value, and per field path the correct scalars."""

    added: int = 0
    deleted: int = 0
    changed: int = 0
    correct: Counter = field(default_factory=Counter)

    @property
    def errors(self) -> int:
        return self.added + self.deleted + self.changed

    def __iadd__(self, other: FieldDiff) -> FieldDiff:
        self.added += other.added
        self.deleted += other.deleted
        self.changed += other.changed
        self.correct.update(other.correct)
        return self


def count_fields(value: object) -> int:
    """Scalars (and nulls) inside a value, as omni's countTotalFields counts them: 0 for a bare scalar."""
    if isinstance(value, dict):
        return sum(1 if not isinstance(v, (dict, list)) else count_fields(v) for v in value.values())
    if isinstance(value, list):
        return sum(1 if not isinstance(v, (dict, list)) else count_fields(v) for v in value)
    return 0


def _weight(value: object) -> int:
    """Fields a value stands for where it sits: its scalars, or one for a scalar or an empty container."""
    return count_fields(value) or 1 if isinstance(value, (dict, list)) else 1


def leaf_paths(value: object, path: str = "") -> Counter:
    """How many scalars sit at each field path (`items[].amount`); what precision and recall count."""
    found: Counter = Counter()
    if isinstance(value, dict):
        for key, item in value.items():
            found.update(leaf_paths(item, f"{path}.{key}" if path else str(key)))
    elif isinstance(value, list):
        for item in value:
            found.update(leaf_paths(item, f"{path}[]"))
    else:
        found[path or "$"] += 1
    return found


def compare(truth: object, predicted: object, path: str = "") -> FieldDiff:
    """The differences between two JSON values (see the module docstring)."""
    if isinstance(truth, dict) and isinstance(predicted, dict):
        return _compare_objects(truth, predicted, path)
    if isinstance(truth, list) and isinstance(predicted, list):
        return _compare_arrays(truth, predicted, path)
    diff = FieldDiff()
    if isinstance(truth, (dict, list)) or isinstance(predicted, (dict, list)):
        # A change of shape: omni counts the old value's fields, or the new one's when the old was null.
        diff.changed = _weight(predicted) if truth is None else _weight(truth)
    elif same_value(truth, predicted):
        diff.correct[path or "$"] += 1
    else:
        diff.changed = 1
    return diff


def _compare_objects(truth: dict, predicted: dict, path: str) -> FieldDiff:
    diff = FieldDiff()
    for key, value in truth.items():
        child = f"{path}.{key}" if path else str(key)
        if key in predicted:
            diff += compare(value, predicted[key], child)
        else:
            diff.deleted += _weight(value)
    diff.added += sum(_weight(value) for key, value in predicted.items() if key not in truth)
    return diff


def _compare_arrays(truth: list, predicted: list, path: str) -> FieldDiff:
    """Elements paired by the matching with the fewest differences; a pair is kept only when it costs less than
    leaving both unmatched."""
    diff = FieldDiff()
    child = f"{path}[]"
    if not truth or not predicted:
        diff.deleted += sum(_weight(v) for v in truth)
        diff.added += sum(_weight(v) for v in predicted)
        return diff
    import numpy as np
    from scipy.optimize import linear_sum_assignment

    pairs = [[compare(t, p, child) for p in predicted] for t in truth]
    saving = np.array([[_saving(t, p, pairs[i][j]) for j, p in enumerate(predicted)]
                       for i, t in enumerate(truth)], dtype=float)
    rows, cols = linear_sum_assignment(saving, maximize=True)
    matched_truth, matched_predicted = set(), set()
    for i, j in zip(rows, cols):
        if saving[i, j] > 0 or pairs[i][j].correct:
            diff += pairs[i][j]
            matched_truth.add(i)
            matched_predicted.add(j)
    diff.deleted += sum(_weight(t) for i, t in enumerate(truth) if i not in matched_truth)
    diff.added += sum(_weight(p) for j, p in enumerate(predicted) if j not in matched_predicted)
    return diff


def _saving(truth: object, predicted: object, pair: FieldDiff) -> float:
    """Differences saved by pairing two elements rather than deleting one and adding the other. Two unequal
    scalars are never paired (omni's diff deletes one and adds the other); objects pair as modifications."""
    if not isinstance(truth, (dict, list)) and not isinstance(predicted, (dict, list)):
        return 2.0 if pair.correct else 0.0
    return float(_weight(truth) + _weight(predicted) - pair.errors)


def field_accuracy(truth: object, predicted: object) -> tuple[float, FieldDiff, int]:
    """(accuracy, differences, fields of the truth) for one document."""
    diff = compare(truth, predicted)
    total = count_fields(truth) if isinstance(truth, (dict, list)) else 1
    if total == 0:
        return (1.0 if diff.errors == 0 else 0.0), diff, 0
    return max(0.0, 1.0 - diff.errors / total), diff, total
