"""configurator.py's config composition: `base = 'config/baseline.py'` instead of exec(open(...)), and
every shipped config file resolving to train.py settings of the right types."""
import sys
from pathlib import Path

import pytest

from conftest import REPO

sys.path.insert(0, str(REPO))
from configurator import ConfigError, configure, load_settings, read_config_file  # noqa: E402

CONFIGS = sorted(p.name for p in (REPO / 'config').glob('*.py'))


def settings_namespace():
    """A script's typed globals, as train.py declares them."""
    ns = {'__annotations__': {'n_layer': int, 'learning_rate': float, 'model_name': str, 'dropout': float | None}}
    ns.update(n_layer=12, learning_rate=6e-4, model_name='baseline', dropout=None)
    return ns


def write(path, text):
    path.write_text(text, encoding='utf-8')
    return path


def test_a_config_builds_on_its_base_and_flags_win(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path / 'root.py', "n_layer = 4\nlearning_rate = 1e-3\nmodel_name = 'root'\n")
    write(tmp_path / 'mid.py', "base = 'root.py'\nlearning_rate = 3e-3\n")
    leaf = write(tmp_path / 'leaf.py', "base = 'mid.py'\nmodel_name = 'leaf'\n")
    assert read_config_file(leaf) == dict(n_layer=4, learning_rate=3e-3, model_name='leaf')
    ns = settings_namespace()
    assert configure(ns, [str(leaf), '--n_layer=6']) == str(leaf)
    assert (ns['n_layer'], ns['learning_rate'], ns['model_name'], ns['dropout']) == (6, 3e-3, 'leaf', None)


@pytest.mark.parametrize('text,expect', [
    ("base = 'nowhere.py'\n", "base='nowhere.py': config file not found"),
    ("base = 3\n", "base=3: expected a config file's path, like 'config/baseline.py'"),
    ("base = 'loop.py'\n", "base='loop.py': the config files build on each other in a loop"),
    ("base = 'root.py'\nn_layers = 2\n", "unknown setting 'n_layers'; did you mean n_layer?"),
    ("base = 'typo.py'\n", "typo.py: unknown setting 'learning_rat'"),
])
def test_a_bad_base_is_one_line_naming_the_file(tmp_path, monkeypatch, text, expect):
    monkeypatch.chdir(tmp_path)
    write(tmp_path / 'root.py', "n_layer = 4\n")
    write(tmp_path / 'typo.py', "learning_rat = 1e-3\n")
    path = write(tmp_path / 'loop.py', text)
    with pytest.raises(ConfigError) as e:
        configure(settings_namespace(), [path.name])
    message = str(e.value)
    assert expect in message and '\n' not in message, message
    assert message.startswith(('loop.py', 'typo.py')), message


def test_base_paths_are_from_the_current_folder_or_the_repository(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # not the repository: config/baseline.py is found in the repository
    path = write(tmp_path / 'mine.py', "base = 'config/baseline.py'\nn_layer = 3\n")
    values = read_config_file(path)
    baseline = read_config_file(REPO / 'config' / 'baseline.py')
    assert values == dict(baseline, n_layer=3) and values['n_embd'] == 512


@pytest.fixture(scope='module')
def train_settings():
    return load_settings(REPO / 'train.py')


@pytest.mark.parametrize('name', CONFIGS)
def test_every_shipped_config_is_valid_for_train_py(name, train_settings):
    """No exec(open(...)) left; each file's settings (its base's included) are train.py settings of the
    right type; a variant file is the baseline plus its own lines."""
    path = REPO / 'config' / name
    assert 'exec(' not in path.read_text(encoding='utf-8')
    settings = dict(train_settings)
    configure(settings, [str(path)])  # raises on an unknown key or a wrong type
    values = read_config_file(path)
    if name.startswith('variant_'):
        baseline = read_config_file(REPO / 'config' / 'baseline.py')
        assert {k: v for k, v in values.items() if k in baseline and baseline[k] == v}.keys() >= \
            baseline.keys() - {'model_name'}
        assert values['model_name'] != baseline['model_name'] and settings['model_name'] == values['model_name']
    assert Path(path).name in CONFIGS
