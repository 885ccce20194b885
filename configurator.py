"""
Overrides a script's typed globals, nanoGPT style, but with errors that explain:

    python train.py config/baseline.py --batch_size=32 --compile=False

A config file is plain Python with bare assignments, run first; --key=value flags come after it.
Every key must be a global the script declares with a type annotation, and every value must have
that type (an int is accepted where a float is expected). A config file builds on another with a
line `base = 'config/baseline.py'` (a path from the current folder or the repository): the base's
settings first, then the file's own. Used as:

    from configurator import configure
    configure(globals(), sys.argv[1:])
"""
import ast
import difflib
import os
import re
import sys
import types
import typing


class ConfigError(ValueError):
    pass


def _allowed_types(annotation):
    """(int,), (int, NoneType), ... from an annotation like `int` or `int | None`."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        return typing.get_args(annotation)
    return (annotation,)


def _type_name(annotation):
    return ' or '.join('None' if t is type(None) else t.__name__ for t in _allowed_types(annotation))


def _unknown_key(key, known, where):
    close = difflib.get_close_matches(key, known, n=3, cutoff=0.6)
    hint = f"; did you mean {' or '.join(close)}?" if close else "; run with --help to list the settings"
    return ConfigError(f"{where}: unknown setting {key!r}{hint}")


def _check_type(key, value, annotation, where):
    allowed = _allowed_types(annotation)
    if value is None and type(None) in allowed:
        return None
    if isinstance(value, bool):  # bool is an int in Python; only accept it where bool is declared
        if bool in allowed:
            return value
    elif isinstance(value, int) and int in allowed:
        return value
    elif isinstance(value, (int, float)) and float in allowed:
        return float(value)
    elif isinstance(value, str) and str in allowed:
        return value
    raise ConfigError(f"{where}: {key}={value!r} has the wrong type: expected {_type_name(annotation)}")


def _parse_flag(key, text, annotation):
    """The value of --key=text: a Python literal, except that str settings keep the text as is."""
    allowed = _allowed_types(annotation)
    if text == 'None' and type(None) in allowed:
        return None
    if str in allowed:
        return text
    if bool in allowed and text.lower() in ('true', 'false'):
        return text.lower() == 'true'
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text  # _check_type then reports the type mismatch


def comments(source):
    """{key: comment} from lines like `key: type = default  # comment` (the settings' descriptions)."""
    found = {}
    for line in source.splitlines():
        m = re.match(r'^\s*(\w+)\s*:[^=#]+=[^#]*#\s*(.+)$', line)
        if m:
            found.setdefault(m.group(1), m.group(2).strip())
    return found


def print_help(namespace):
    script = os.path.basename(sys.argv[0])
    notes = namespace.get('setting_help', {})
    print(f"usage: python {script} [config/file.py] [--key=value ...]\n\nsettings (type = default: description):")
    for key, annotation in namespace['__annotations__'].items():
        line = f"  --{key:<28} {_type_name(annotation):<14} = {namespace[key]!r}"
        print(f"{line:<64} {notes.get(key, '')}".rstrip())


SETTINGS_END = 'config_keys = list(__annotations__)'


def load_settings(script):
    """A script's settings (its typed globals with their defaults, and `setting_help`) without
    running the script: the lines of the script before `config_keys = list(__annotations__)` are
    its imports and settings, and only those run. sweep.py validates runs with this."""
    with open(script, encoding='utf-8') as f:
        source = f.read()
    if SETTINGS_END not in source:
        raise ConfigError(f"{script}: no settings block (expected a line {SETTINGS_END!r})")
    namespace = {'__name__': 'settings_of_' + os.path.splitext(os.path.basename(script))[0],
                 '__file__': os.path.abspath(script)}
    head = source[:source.index(SETTINGS_END)]
    exec(compile(head, script, 'exec'), namespace)
    return namespace


def read_python_file(path, kind='config'):
    """The plain values a config (or sweep) file assigns: it runs with __file__ set, so that it can
    build on another file; imports, functions and _private names are left out."""
    scope = {'__file__': os.path.abspath(path)}
    try:
        with open(path, encoding='utf-8') as f:
            exec(compile(f.read(), path, 'exec'), scope)
    except Exception as e:
        raise ConfigError(f"{path}: cannot run this {kind} file: {type(e).__name__}: {e}") from None
    return {k: v for k, v in scope.items()
            if not k.startswith('_') and not isinstance(v, (types.ModuleType, types.FunctionType, type))}


REPO = os.path.dirname(os.path.abspath(__file__))


def config_chain(path, seen=()):
    """[(file, the settings it assigns)] from the first base to path itself: a config file builds on
    the one its `base` names (from the current folder or the repository), which may have a base too.
    Raises ConfigError for a base that is missing, not a path, or a loop."""
    values = read_python_file(path)
    base = values.pop('base', None)
    if base is None:
        return [(path, values)]
    if not isinstance(base, str):
        raise ConfigError(f"{path}: base={base!r}: expected a config file's path, like 'config/baseline.py'")
    found = base if os.path.isfile(base) else os.path.join(REPO, base)
    if not os.path.isfile(found):
        raise ConfigError(f"{path}: base={base!r}: config file not found (looked in {os.getcwd()} and {REPO})")
    seen = (*seen, os.path.realpath(path))
    if os.path.realpath(found) in seen:
        raise ConfigError(f"{path}: base={base!r}: the config files build on each other in a loop")
    return config_chain(found, seen) + [(path, values)]


def read_config_file(path):
    """The settings of a config file, its bases' included."""
    return {k: v for _, values in config_chain(path) for k, v in values.items()}


def configure(namespace, argv):
    """Apply a config file and --key=value flags from argv to the annotated globals in namespace.
    Returns the config file's path (or None). Raises ConfigError with a one-line message."""
    annotations = namespace.get('__annotations__', {})
    known = list(annotations)
    if '-h' in argv or '--help' in argv:
        print_help(namespace)
        sys.exit(0)
    files = [a for a in argv if not a.startswith('--')]
    if len(files) > 1:
        raise ConfigError(f"{files[1]}: only one config file may be given (already have {files[0]})")
    config_file = files[0] if files else None
    if config_file is not None:  # the file first, so that flags win wherever they stand
        if not os.path.isfile(config_file):
            raise ConfigError(f"{config_file}: config file not found (expected a Python file such as config/baseline.py)")
        for path, values in config_chain(config_file):
            for key, value in values.items():
                if key not in annotations:
                    raise _unknown_key(key, known, path)
                namespace[key] = _check_type(key, value, annotations[key], path)
    for arg in argv:
        if not arg.startswith('--'):
            continue
        key, sep, text = arg[2:].partition('=')
        if not sep:
            raise ConfigError(f"{arg}: expected --key=value")
        if key not in annotations:
            raise _unknown_key(key, known, f"--{key}")
        namespace[key] = _check_type(key, _parse_flag(key, text, annotations[key]), annotations[key], f"--{key}")
    return config_file
