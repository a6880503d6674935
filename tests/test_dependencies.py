"""Dependencies are declared exactly: every third-party package encdec imports is in
pyproject.toml, and every declared one is imported (or needed at run time, listed below)."""
import ast
import importlib.metadata
import pathlib
import re
import sys
import tomllib

ROOT = pathlib.Path(__file__).resolve().parents[1]
# Declared but never imported by name: loaded by another package at run time.
RUNTIME_ONLY = {
    "jaxlib": "jax's compiled backend",
    "array_record": "TFDS reads and writes the array_record files of our builders through it",
}


def _distribution_name(requirement: str) -> str:
  return re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def _pyproject() -> dict:
  return tomllib.loads((ROOT / "pyproject.toml").read_text())


def imported_distributions(directory: pathlib.Path) -> dict[str, set[str]]:
  """{distribution: {files importing it}} for the third-party imports under `directory`."""
  owners = importlib.metadata.packages_distributions()
  found: dict[str, set[str]] = {}
  for path in directory.rglob("*.py"):
    for node in ast.walk(ast.parse(path.read_text())):
      if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
      elif isinstance(node, ast.ImportFrom) and node.level == 0:
        names = [node.module]
      else:
        continue
      for top in {name.split(".")[0] for name in names}:
        local = (path.parent / f"{top}.py").exists()   # e.g. tests/compiled.py
        if top in sys.stdlib_module_names or top in ("encdec", "benchmarks", "experiments") or local:
          continue
        for dist in owners.get(top, [top]):
          found.setdefault(dist.lower().replace("_", "-"), set()).add(
              str(path.relative_to(ROOT)))
  return found


def test_every_package_encdec_imports_is_declared_and_nothing_more():
  declared = {_distribution_name(r) for r in _pyproject()["project"]["dependencies"]}
  imported = imported_distributions(ROOT / "encdec")
  undeclared = {d: sorted(files) for d, files in imported.items() if d not in declared}
  assert not undeclared, f"imported but not in pyproject's dependencies: {undeclared}"
  runtime_only = {_distribution_name(d) for d in RUNTIME_ONLY}
  unused = declared - set(imported) - runtime_only
  assert not unused, f"declared but never imported: {sorted(unused)}"


def test_benchmarks_and_tests_import_only_declared_packages():
  project = _pyproject()["project"]
  declared = {_distribution_name(r) for r in project["dependencies"]}
  for extra in project["optional-dependencies"].values():
    declared |= {_distribution_name(r) for r in extra}
  for directory in ("benchmarks", "tests", "experiments"):
    imported = imported_distributions(ROOT / directory)
    undeclared = {d: sorted(files) for d, files in imported.items() if d not in declared}
    assert not undeclared, f"{directory}/ imports undeclared packages: {undeclared}"


def test_every_encdec_module_imports():
  import importlib  # pylint: disable=import-outside-toplevel
  import pkgutil  # pylint: disable=import-outside-toplevel
  import encdec  # pylint: disable=import-outside-toplevel
  names = [m.name for m in pkgutil.walk_packages(encdec.__path__, "encdec.")]
  assert "encdec.model.schema" in names and "encdec.configs.g2p_cmudict" in names
  for name in names:
    importlib.import_module(name)
