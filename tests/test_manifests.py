"""Loading manifest files: every bad input gets its rule and file:line."""

from __future__ import annotations

from pathlib import Path

from prefect_gitops.engine.objects import Source
from prefect_gitops.engine.source.manifests import MAX_FILE_BYTES, load_file, load_files, load_text, parse_documents

CONFIGMAP = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\ndata:\n  a: '1'\n"


def write(root: Path, rel: str, content: str | bytes) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return path


def only_problem(loaded):
    assert len(loaded.problems) == 1, loaded.problems
    return loaded.problems[0]


def test_multi_document_file_keeps_each_start_line(tmp_path):
    text = "---\n" + CONFIGMAP.format(name="a") + "---\n# only a comment\n---\n\n---\n" + CONFIGMAP.format(name="b")
    loaded = load_file(write(tmp_path, "apps/x/cm.yaml", text), tmp_path)
    assert loaded.problems == []
    assert [(m.name, m.source) for m in loaded.manifests] == [
        ("a", Source("apps/x/cm.yaml", 2)), ("b", Source("apps/x/cm.yaml", 13))]


def test_json_file(tmp_path):
    loaded = load_file(write(tmp_path, "cm.json", '{"apiVersion": "v1", "kind": "ConfigMap",\n'
                                                  ' "metadata": {"name": "j"}}'), tmp_path)
    assert [m.ref for m in loaded.manifests] == ["ConfigMap/j"]


def test_kubernetes_yaml_values():
    """As Kubernetes reads YAML: timestamps stay strings, keys become strings, merges work."""
    loaded = load_text("kind: X\nwhen: 2024-01-01\n80: http\nbase: &b {x: 1, y: 2}\n"
                       "merged:\n  <<: *b\n  y: 3\n", "x.yaml")
    assert loaded.manifests[0].obj == {"kind": "X", "when": "2024-01-01", "80": "http",
                                       "base": {"x": 1, "y": 2}, "merged": {"x": 1, "y": 3}}


def test_list_kinds_are_expanded_with_item_lines():
    text = ("apiVersion: v1\nkind: List\nitems:\n"
            "- apiVersion: v1\n  kind: ConfigMap\n  metadata: {name: a}\n"
            "- apiVersion: v1\n  kind: Secret\n  metadata: {name: b}\n"
            "---\nkind: ConfigMapList\nitems:\n  - {kind: ConfigMap, metadata: {name: c}}\n")
    loaded = load_text(text, "list.yaml")
    assert [(m.ref, m.source.line) for m in loaded.manifests] == [
        ("ConfigMap/a", 4), ("Secret/b", 7), ("ConfigMap/c", 13)]


def test_list_item_that_is_not_an_object():
    problem = only_problem(load_text("kind: List\nitems:\n- kind: A\n- just a string\n", "l.yaml"))
    assert (problem.rule, problem.source) == ("file.not-an-object", Source("l.yaml", 4))


def test_malformed_yaml_names_line_and_column(tmp_path):
    text = CONFIGMAP.format(name="ok") + "---\nkind: ConfigMap\nmetadata:\n  name: [unclosed\n  x: 1\n"
    loaded = load_file(write(tmp_path, "bad.yaml", text), tmp_path)
    problem = only_problem(loaded)
    assert problem.rule == "yaml.syntax"
    assert problem.source == Source("bad.yaml", 11)
    assert "line 11, column" in problem.message
    assert "bad.yaml:11" in str(problem)
    assert [m.name for m in loaded.manifests] == ["ok"]  # documents before the error survive


def test_forbidden_character_names_its_line():
    problem = only_problem(load_text("kind: A\nname: \"x\x07\"\n", "c.yaml"))
    assert (problem.rule, problem.source.line) == ("yaml.syntax", 2)


def test_duplicate_keys_name_the_key_and_both_lines(tmp_path):
    text = "kind: ConfigMap\nmetadata:\n  name: a\n  labels: {x: '1'}\n  name: b\n"
    problem = only_problem(load_file(write(tmp_path, "dup.yaml", text), tmp_path))
    assert (problem.rule, problem.source) == ("yaml.duplicate-key", Source("dup.yaml", 5))
    assert "'name'" in problem.message and "line 3" in problem.message


def test_duplicate_keys_in_every_document_are_all_reported():
    loaded = load_text("a: 1\na: 2\n---\nb: {c: 1, c: 2}\n", "d.yaml")
    assert [(p.rule, p.source.line) for p in loaded.problems] == [
        ("yaml.duplicate-key", 2), ("yaml.duplicate-key", 4)]
    assert loaded.manifests == []


def test_not_utf8_names_line_and_byte(tmp_path):
    path = write(tmp_path, "latin1.yaml", b"kind: ConfigMap\ndata:\n  city: M\xfcnchen\n")
    problem = only_problem(load_file(path, tmp_path))
    assert (problem.rule, problem.source) == ("file.not-utf8", Source("latin1.yaml", 3))
    assert "0xfc" in problem.message


def test_utf8_bom_is_accepted(tmp_path):
    loaded = load_file(write(tmp_path, "bom.yaml", b"\xef\xbb\xbf" + CONFIGMAP.format(name="b").encode()), tmp_path)
    assert [m.name for m in loaded.manifests] == ["b"]


def test_too_large_file_is_refused_without_reading(tmp_path):
    path = tmp_path / "huge.yaml"
    with open(path, "wb") as handle:
        handle.truncate(MAX_FILE_BYTES + 1)  # sparse: cheap to make
    problem = only_problem(load_file(path, tmp_path))
    assert (problem.rule, problem.source) == ("file.too-large", Source("huge.yaml"))


def test_alias_bomb_is_refused_without_expanding_it(tmp_path):
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for level in range(1, 10):  # 9**10 strings once expanded
        prev, name = chr(ord("a") + level - 1), chr(ord("a") + level)
        lines.append(f"{name}: &{name} [" + ",".join([f"*{prev}"] * 9) + "]")
    path = write(tmp_path, "bomb.yaml", "kind: ConfigMap\n" + "\n".join(lines) + "\n")
    problem = only_problem(load_file(path, tmp_path))  # expanded, it would be 9**10 strings
    assert (problem.rule, problem.source.path) == ("yaml.alias-bomb", "bomb.yaml")


def test_small_aliases_are_fine():
    loaded = load_text("kind: X\nbase: &b {a: 1}\none: *b\ntwo: *b\n", "a.yaml")
    obj = loaded.manifests[0].obj
    assert obj["one"] == obj["two"] == {"a": 1}
    assert obj["one"] is not obj["two"]  # no shared sub-objects to mutate by accident


def test_recursive_alias_is_refused():
    problem = only_problem(load_text("kind: X\na: &x [1, *x]\n", "r.yaml"))
    assert (problem.rule, problem.source.line) == ("yaml.recursive-alias", 2)


def test_unknown_tag_is_refused():
    problem = only_problem(load_text("kind: X\nvalue: !vault secret/x\n", "t.yaml"))
    assert (problem.rule, problem.source.line) == ("yaml.unknown-tag", 2)


def test_document_that_is_not_a_mapping(tmp_path):
    text = CONFIGMAP.format(name="ok") + "---\n- a\n- b\n---\njust text\n"
    loaded = load_file(write(tmp_path, "x.yaml", text), tmp_path)
    assert [(p.rule, p.source.line) for p in loaded.problems] == [
        ("file.not-an-object", 8), ("file.not-an-object", 11)]
    assert "list" in loaded.problems[0].message


def test_too_deep_nesting_is_an_error_not_a_crash():
    loaded = load_text("a: " + "[" * 5000 + "]" * 5000 + "\n", "deep.yaml")
    assert loaded.problems and loaded.problems[0].rule in ("yaml.syntax", "yaml.too-deep")


def test_positions_map_paths_to_lines():
    documents, _ = parse_documents("apps:\n  - name: a\n    sync:\n      prune: yes\n", "g.yaml",
                                   track_positions=True)
    document = documents[0]
    assert document.line_of(("apps", 0, "sync", "prune")) == 4
    assert document.line_of(("apps", 0, "sync", "prune", "deeper")) == 4
    assert document.line_of(("apps", 0)) == 2


def test_a_thousand_objects_load_from_many_files_and_one(tmp_path):
    files = [write(tmp_path, f"cm/{i:04}.yaml", CONFIGMAP.format(name=f"cm-{i}")) for i in range(500)]
    files.append(write(tmp_path, "all.yaml", "---\n".join(CONFIGMAP.format(name=f"x-{i}") for i in range(500))))
    loaded = load_files(files, tmp_path)
    assert len(loaded.manifests) == 1000 and not loaded.problems
    assert [m.name for m in loaded.manifests[-2:]] == ["x-498", "x-499"]
