"""The layering of the top-level modules: libraries below, scripts on top, no cycles.

Every import of a project module counts, those inside functions too (a lazy import is still a
dependency). A script is a module run from the command line (`if __name__ == '__main__'`, or train.py,
which trains when it is run); prepare.py is a script and also the reader of prepared data, which the
scripts above it use. model.py imports only torch and the standard library."""
import ast
import importlib
import sys

import pytest

from conftest import REPO

sys.path.insert(0, str(REPO))
MODULES = sorted(p.stem for p in REPO.glob('*.py'))
DATA = 'prepare'  # the data script whose readers (read_meta, load_bin, read_stories) the scripts share


def project_imports(name):
    """{imported project module: line} for every import statement in name.py, at any depth."""
    tree = ast.parse((REPO / f'{name}.py').read_text(encoding='utf-8'))
    found = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name.split('.')[0] for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module.split('.')[0]]
        else:
            continue
        for imported in names:
            if imported in MODULES and imported != name:
                found.setdefault(imported, node.lineno)
    return found


def top_level_names(name):
    tree = ast.parse((REPO / f'{name}.py').read_text(encoding='utf-8'))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name.split('.')[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split('.')[0])
    return names


def is_script(name):
    text = (REPO / f'{name}.py').read_text(encoding='utf-8')
    return name == 'train' or "if __name__ == '__main__'" in text


GRAPH = {name: project_imports(name) for name in MODULES}
SCRIPTS = {name for name in MODULES if is_script(name)}


def test_the_modules_are_the_expected_ones():
    """The classification below is not vacuous: the libraries and scripts this project has are seen."""
    assert {'model', 'runs', 'tokenizer', 'configurator', 'stats'} <= set(MODULES) - SCRIPTS
    assert {'train', 'prepare', 'sample', 'compare', 'eval_harness', 'sweep'} <= SCRIPTS
    assert GRAPH['train'].keys() >= {'model', 'runs', 'tokenizer', 'prepare', 'configurator'}


def test_no_import_cycles():
    def visit(name, path):
        for imported in GRAPH[name]:
            if imported in path:
                cycle = path[path.index(imported):] + [imported]
                pytest.fail("import cycle: " + ' -> '.join(f"{a}.py:{GRAPH[a][b]}" for a, b in zip(cycle, cycle[1:])))
            visit(imported, path + [imported])
    for name in MODULES:
        visit(name, [name])


def test_model_imports_only_torch_and_the_standard_library():
    allowed = set(sys.stdlib_module_names) | {'torch'}
    assert top_level_names('model') - allowed == set()


@pytest.mark.parametrize('name', MODULES)
def test_libraries_import_no_script_and_scripts_no_other_script(name):
    below = SCRIPTS - {name} if name in SCRIPTS else SCRIPTS
    if name in SCRIPTS:
        below = below - {DATA}  # the data readers: the one script others may build on
    wrong = {m: line for m, line in GRAPH[name].items() if m in below}
    kind = 'script' if name in SCRIPTS else 'library'
    assert not wrong, (f"{name}.py ({kind}) imports the script(s) " + ', '.join(f"{m} (line {line})" for m, line in
                       wrong.items()) + ": move the shared helper into a library module")


def test_every_module_imports_alone():
    """Each module imported first, with no project module loaded (train.py is left out: importing it
    trains). In this process, so that torch and scipy load once; the project's modules are put back
    as they were afterwards, so that other tests keep the same classes."""
    names = [n for n in MODULES if n != 'train']
    saved = {m: sys.modules.pop(m) for m in MODULES if m in sys.modules}
    loaded = {}
    try:
        for name in names:
            for m in MODULES:
                sys.modules.pop(m, None)
            importlib.import_module(name)
            loaded[name] = {m for m in MODULES if m in sys.modules and m != name}
    finally:
        for m in MODULES:
            sys.modules.pop(m, None)
        sys.modules.update(saved)
    assert loaded['model'] == set()  # model.py loads no project module
    for name, others in loaded.items():  # what loads is what the import statements say: nothing hidden
        assert others <= reachable(name), (name, others)


def reachable(name):
    seen, todo = set(), [name]
    while todo:
        for imported in GRAPH[todo.pop()]:
            if imported not in seen:
                seen.add(imported)
                todo.append(imported)
    return seen
