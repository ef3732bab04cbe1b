"""No store filter puts an `$or` beside other keys (services/common/mongo.py `one_if_any`):
the MongoDB stand-in translates `{"_id": x, "$or": [a, b]}` without parentheses, as
`_id = x AND a OR b`, and an update then takes another document (a lease "taken" while
another instance held it, an event claimed while in hand). Read from the code's syntax."""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def has_or(node):
    return isinstance(node, ast.Dict) and any(
        isinstance(k, ast.Constant) and k.value == "$or" for k in node.keys)


def or_beside_other_keys(tree):
    for node in ast.walk(tree):
        if isinstance(node, ast.Dict):
            keys = [k.value if isinstance(k, ast.Constant) else None for k in node.keys]
            if "$or" in keys and len(keys) > 1:
                yield node.lineno
        # dict(filter_with_or, _id=...) builds the same filter
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "dict" and node.keywords:
            for arg in node.args:
                if has_or(arg):
                    yield node.lineno
    # the same, in two steps: an $or filter named, then merged with other keys
    for scope in [tree] + [n for n in ast.walk(tree)
                           if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]:
        yield from _or_names_merged(list(_scope_nodes(scope)))


def _scope_nodes(scope):
    """The nodes of one function (or of the module), not those of the functions inside it."""
    stack = list(ast.iter_child_nodes(scope))
    while stack:
        node = stack.pop()
        yield node
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)):
            stack.extend(ast.iter_child_nodes(node))


def _or_names_merged(nodes):
    named = {target.id for node in nodes if isinstance(node, ast.Assign) and has_or(node.value)
             for target in node.targets if isinstance(target, ast.Name)}
    if not named:
        return

    def is_named(node):
        return isinstance(node, ast.Name) and node.id in named

    for node in nodes:
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "dict" \
                and (node.keywords or len(node.args) > 1) \
                and any(is_named(a) for a in node.args + [k.value for k in node.keywords]):
            yield node.lineno  # dict(waiting, _id=...)
        elif isinstance(node, ast.Dict) and len(node.keys) > 1 and any(
                k is None and is_named(v) for k, v in zip(node.keys, node.values)):
            yield node.lineno  # {**waiting, "_id": ...}
        elif isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Subscript) and is_named(t.value) for t in node.targets):
            yield node.lineno  # waiting["_id"] = ...
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                and node.func.attr == "update" and is_named(node.func.value):
            yield node.lineno  # waiting.update(...)


def test_no_filter_puts_an_or_beside_other_keys():
    found = []
    for folder in ("services", "gateway", "deploy"):
        for path in (ROOT / folder).rglob("*.py"):
            for line in or_beside_other_keys(ast.parse(path.read_text(), str(path))):
                found.append(f"{path.relative_to(ROOT)}:{line}")
    assert found == []


def test_the_check_finds_the_shapes_it_looks_for():
    bad = ast.parse('q = {"_id": job, "$or": [{"a": 1}, {"b": 2}]}\nr = dict({"$or": []}, _id=1)')
    assert list(or_beside_other_keys(bad)) == [1, 2]
    good = ast.parse('q = {"$and": [{"_id": job}, {"$or": [{"a": 1}]}]}\nr = {"$or": []}')
    assert list(or_beside_other_keys(good)) == []


def test_the_check_finds_an_or_filter_merged_with_other_keys_through_a_name():
    """The release claim's filter before `one_if_any` (services/slots/store.py claim_due) was
    `dict(waiting, _id=...)`, `waiting` an `$or` filter named first: the same misread filter,
    built in two steps."""
    bad = ast.parse(
        'def claim(x):\n'
        '    waiting = {"$or": [{"state": 1}, {"state": 2}]}\n'
        '    a = dict(waiting, _id=x)\n'
        '    b = {**waiting, "_id": x}\n'
        '    waiting["_id"] = x\n'
        '    waiting.update(_id=x)\n')
    assert sorted(or_beside_other_keys(bad)) == [3, 4, 5, 6]
    # a name bound to an $or filter in another function is another variable
    good = ast.parse(
        'def one():\n'
        '    query = {"$or": [{"a": 1}, {"b": 2}]}\n'
        '    return find(query)\n'
        'def two(x):\n'
        '    query = {"state": 1}\n'
        '    query["_id"] = x\n'
        '    return dict(query, _id=x)\n')
    assert list(or_beside_other_keys(good)) == []
